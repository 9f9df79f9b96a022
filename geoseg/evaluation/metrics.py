"""Segmentation metrics: the one place geoseg computes them.

Conventions follow Long, Shelhamer and Darrell (FCN, CVPR 2015): ``n_ij`` is
the number of pixels of reference class ``i`` predicted as class ``j``, and
``t_i = sum_j n_ij``. Confusion matrices are rows = reference, columns =
prediction. Every metric is computed from summed confusion matrices, never by
averaging per-scene means. Classes absent from both reference and prediction
have undefined (NaN) scores and are left out of means.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

_ROWS = 1 << 22  # pixels per bincount call: bounds the int64 temporaries


def confusion(reference: np.ndarray, prediction: np.ndarray, num_classes: int,
              valid: np.ndarray | None = None, weights: np.ndarray | None = None) -> np.ndarray:
    """``K x K`` confusion matrix of two label arrays (values outside ``0..K-1`` are skipped).

    ``weights`` (same shape, or broadcastable per row) gives each pixel a weight,
    e.g. its ground area; the result is then float64, else int64.
    """
    ref = np.asarray(reference).ravel()
    pred = np.asarray(prediction).ravel()
    keep = (ref < num_classes) & (pred < num_classes)
    if np.issubdtype(ref.dtype, np.signedinteger) or np.issubdtype(pred.dtype, np.signedinteger):
        keep &= (ref >= 0) & (pred >= 0)
    if valid is not None:
        keep &= np.asarray(valid).ravel()
    w = None if weights is None else np.broadcast_to(weights, np.shape(reference)).ravel()
    out = np.zeros(num_classes * num_classes, dtype=np.float64 if w is not None else np.int64)
    for s in range(0, ref.size, _ROWS):
        k = keep[s : s + _ROWS]
        idx = ref[s : s + _ROWS][k].astype(np.int64) * num_classes + pred[s : s + _ROWS][k]
        out += np.bincount(idx, weights=None if w is None else w[s : s + _ROWS][k],
                           minlength=num_classes * num_classes).astype(out.dtype)
    return out.reshape(num_classes, num_classes)


def coded_confusion(reference: np.ndarray, prediction: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                    num_classes: int) -> tuple[np.ndarray, int, int, np.ndarray]:
    """``K x K`` confusion of two label images recoded through look-up tables, in one bincount.

    ``rows[v]`` is reference value ``v``'s row (``K``: ignored, ``K + 1``: not a legal value);
    ``cols[v]`` is predicted value ``v``'s column (``K``: not a legal value). Returns the matrix and
    the numbers of pixels with illegal reference and predicted values, so a caller can name them.
    This is what benchmarks need: each one's coding (void labels, trainIds, reduce-zero-label)
    becomes two tables, and a 2048 x 1024 image costs one pass.
    """
    from geoseg.evaluation._counts_ext import coded_histogram

    k = num_classes
    m = coded_histogram(label_run(reference), label_run(prediction), np.ascontiguousarray(rows, dtype=np.uint16),
                        np.ascontiguousarray(cols, dtype=np.uint16), k)
    return m[:k, :k].astype(np.int64), int(m[k + 1].sum()), int(m[:, k].sum()), m.sum(axis=0)


def instance_counts(instances: np.ndarray, prediction: np.ndarray, same_category: np.ndarray,
                    min_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per instance id of a Cityscapes-style instance image (``label * 1000 + n``), in one pass.

    For every id above ``min_id``: its pixels, the pixels predicted as its label, and those predicted
    as any label of its category (``same_category[label, predicted]``, a uint8 table; labels past its
    last row read the last row). Three int64 arrays indexed by id (65,536 entries). This is what
    instance-weighted IoU (iIoU) sums.
    """
    from geoseg.evaluation._counts_ext import instance_counts as counts

    return counts(label_run(instances), label_run(prediction), np.ascontiguousarray(same_category, dtype=np.uint8),
                  int(min_id))


def label_run(a: np.ndarray) -> np.ndarray:
    """A label image as one contiguous run of uint8 or uint16 (the compiled counters' types)."""
    if a.dtype not in (np.uint8, np.uint16):
        if a.size and (a.min() < 0 or a.max() > 65535):
            raise ValueError("label values must be within 0..65535")
        a = a.astype(np.uint16)
    return np.ascontiguousarray(a).reshape(-1)


def _div(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1), np.nan)


def class_scores(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class TP, FP, FN, IoU, precision, recall and F1 (Dice) of a confusion matrix."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    t = cm.sum(axis=1)  # reference totals t_i
    p = cm.sum(axis=0)  # predicted totals
    fp, fn = p - tp, t - tp
    precision, recall = _div(tp, p), _div(tp, t)
    return {
        "tp": tp, "fp": fp, "fn": fn, "support": t,
        "iou": _div(tp, tp + fp + fn),
        "precision": precision, "recall": recall,
        "f1": _div(2 * tp, 2 * tp + fp + fn),
    }


def foreground_iou(cm: np.ndarray, foreground) -> float | None:
    """The mean IoU of the ``foreground`` class ids that occur (in the reference or the prediction); None if none."""
    iou = class_scores(cm)["iou"]
    vals = [iou[i] for i in foreground if np.isfinite(iou[i])]
    return float(np.mean(vals)) if vals else None


def overall_scores(cm: np.ndarray, ids=None) -> dict[str, float]:
    """The FCN paper's four metrics.

    ``ids`` scores only those classes of ``cm`` while the other rows and columns still count:
    a prediction outside ``ids`` (a benchmark's void labels) is then a miss of the reference
    class, as cityscapesScripts and mmsegmentation count it.
    """
    cm = np.asarray(cm, dtype=np.float64)
    s = class_scores(cm)
    if ids is not None:
        s = {k: v[list(ids)] for k, v in s.items()}
    t = s["support"]
    present = t > 0
    total = cm.sum()
    return {
        "pixel_accuracy": float(s["tp"].sum() / total) if total else float("nan"),
        "mean_accuracy": float(np.nanmean(s["recall"][present])) if present.any() else float("nan"),
        "mean_iou": float(np.nanmean(s["iou"])) if np.isfinite(s["iou"]).any() else float("nan"),
        "fw_iou": float(np.nansum(t * np.nan_to_num(s["iou"])) / t.sum()) if t.sum() else float("nan"),
    }


def area_weighted_mean_iou(cm_m2: np.ndarray, ids=None) -> float:
    """Mean of per-class area IoU, each class weighted by its reference area; ``ids`` as in
    :func:`overall_scores` (other rows and columns still count as errors)."""
    s = class_scores(cm_m2)
    if ids is not None:
        s = {k: v[list(ids)] for k, v in s.items()}
    t = s["support"]
    ok = np.isfinite(s["iou"]) & (t > 0)
    return float((s["iou"][ok] * t[ok]).sum() / t[ok].sum()) if ok.any() else float("nan")


@dataclass
class Confusion:
    """Confusion matrices in pixels and in m², summed over chunks and scenes."""

    num_classes: int
    px: np.ndarray = field(default=None)
    m2: np.ndarray = field(default=None)

    def __post_init__(self) -> None:
        k = self.num_classes
        if self.px is None:
            self.px = np.zeros((k, k), dtype=np.int64)
        if self.m2 is None:
            self.m2 = np.zeros((k, k), dtype=np.float64)

    def __iadd__(self, other: Confusion) -> Confusion:
        self.px += other.px
        self.m2 += other.m2
        return self

    def add(self, reference, prediction, valid=None, pixel_area=None) -> None:
        self.px += confusion(reference, prediction, self.num_classes, valid)
        if pixel_area is not None:
            self.m2 += confusion(reference, prediction, self.num_classes, valid, weights=pixel_area)


# -- object-level scores (the SpaceNet building metric) ---------------------------------------------


@dataclass(frozen=True)
class ObjectScores:
    tp: int
    fp: int
    fn: int
    threshold: float

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def to_dict(self) -> dict:
        return {"tp": self.tp, "fp": self.fp, "fn": self.fn, "precision": self.precision,
                "recall": self.recall, "f1": self.f1, "iou_threshold": self.threshold}


def f1_of_counts(tp, fp, fn):
    """Object F1 of summed counts, ``2 TP / (2 TP + FP + FN)`` (0 where nothing was found or expected); arrays too."""
    tp, fp, fn = (np.asarray(v, dtype=np.float64) for v in (tp, fp, fn))
    den = 2 * tp + fp + fn
    return np.divide(2 * tp, den, out=np.zeros_like(den), where=den > 0)


def object_f1_interval(counts, confidence: float = 0.95, n_resamples: int = 9999,
                       seed: int = 0) -> tuple[float, float] | None:
    """A percentile bootstrap interval of the summed-count object F1, resampling whole scenes.

    ``counts``: one ``(tp, fp, fn)`` per scene. Scenes are drawn with replacement and their counts
    summed, as the headline F1 sums them, so the interval says how much the figure depends on
    which scenes were scored. ``None`` for fewer than two scenes. Seeded: a report is reproducible.
    (``scipy.stats.bootstrap``, paired over the three counts.)
    """
    from scipy.stats import bootstrap

    counts = np.asarray(counts, dtype=np.float64).reshape(-1, 3)
    if len(counts) < 2:
        return None
    if (counts == counts[0]).all():  # every resample is the same: the interval is the figure itself
        f = float(f1_of_counts(*counts.sum(axis=0)))
        return f, f

    def stat(tp, fp, fn, axis=-1):
        return f1_of_counts(tp.sum(axis=axis), fp.sum(axis=axis), fn.sum(axis=axis))

    res = bootstrap(tuple(counts.T), stat, paired=True, vectorized=True, confidence_level=confidence,
                    n_resamples=n_resamples, method="percentile", rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


@dataclass(frozen=True)
class InstanceOverlaps:
    """Which objects of two instance rasters of one grid overlap, by how many pixels.

    ``ref_area``/``pred_area``: pixels per object (index 0 unused); ``ref``/``pred``/``inter``: the
    overlapping pairs (1-based dense object numbers) and their shared pixels.
    """

    ref_area: np.ndarray
    pred_area: np.ndarray
    ref: np.ndarray
    pred: np.ndarray
    inter: np.ndarray


def instance_overlaps(reference: np.ndarray, prediction: np.ndarray) -> InstanceOverlaps:
    """The overlap table of two instance rasters of one grid (0: none; any other ids)."""
    ref = np.asarray(reference).astype(np.int64, copy=False).ravel()
    pred = np.asarray(prediction).astype(np.int64, copy=False).ravel()
    if ref.shape != pred.shape:
        raise ValueError(f"instance rasters of different sizes: {np.shape(reference)} and {np.shape(prediction)}")

    def dense(ids):  # 0 stays 0, other ids become 1.. in ascending order
        values, inv = np.unique(ids, return_inverse=True)
        if len(values) and values[0] == 0:
            return inv, len(values) - 1
        return inv + 1, len(values)

    ref, n_ref = dense(ref)
    pred, n_pred = dense(pred)
    both = (ref > 0) & (pred > 0)
    pair, inter = np.unique(ref[both] * (n_pred + 1) + pred[both], return_counts=True)
    return InstanceOverlaps(np.bincount(ref, minlength=n_ref + 1), np.bincount(pred, minlength=n_pred + 1),
                            pair // (n_pred + 1), pair % (n_pred + 1), inter)


def match_overlaps(ov: InstanceOverlaps, threshold: float = 0.5, min_reference_px: int = 0,
                   min_prediction_px: int = 0) -> ObjectScores:
    """The SpaceNet matching over an overlap table: pairs taken best IoU first, each object at most once.

    Reference objects of ``min_reference_px`` pixels or fewer are left out before matching, as
    ``evaluate`` and the SpaceNet scorer leave them out (a prediction on one is a false positive);
    predicted objects smaller than ``min_prediction_px`` are dropped (a decoding's minimum area).
    """
    small = ov.ref_area <= min_reference_px
    keep = ov.pred_area >= max(min_prediction_px, 1)
    small[0], keep[0] = True, False
    sel = keep[ov.pred] & ~small[ov.ref]
    ri, pi, inter = ov.ref[sel], ov.pred[sel], ov.inter[sel]
    iou = inter / (ov.ref_area[ri] + ov.pred_area[pi] - inter)
    tp = 0
    used_r, used_p = set(), set()
    for k in np.argsort(-iou, kind="stable"):
        if iou[k] < threshold:
            break
        a, b = int(ri[k]), int(pi[k])
        if a in used_r or b in used_p:
            continue
        used_r.add(a)
        used_p.add(b)
        tp += 1
    n_ref, n_pred = int((~small).sum()), int(keep.sum())
    return ObjectScores(tp, n_pred - tp, n_ref - tp, threshold)


def match_instance_rasters(reference: np.ndarray, prediction: np.ndarray, threshold: float = 0.5,
                           min_reference_px: int = 0) -> ObjectScores:
    """The SpaceNet matching of :func:`match_objects` on two instance rasters of one grid (0: none).

    Object IoUs come from pixel counts (:func:`instance_overlaps`, :func:`match_overlaps`).
    """
    return match_overlaps(instance_overlaps(reference, prediction), threshold, min_reference_px)


def match_objects(reference, prediction, threshold: float = 0.5) -> ObjectScores:
    """One-to-one matching of predicted to reference polygons at IoU >= ``threshold``.

    As in the SpaceNet metric: each prediction in turn takes the still
    unmatched reference polygon it overlaps with the highest IoU; a match at or
    above the threshold is a true positive and removes that reference polygon.
    """
    import shapely

    ref = [g for g in reference if g is not None and not g.is_empty]
    pred = [g for g in prediction if g is not None and not g.is_empty]
    tree = shapely.STRtree(ref)
    free = set(range(len(ref)))
    tp = 0
    for g in pred:
        best, best_iou = None, 0.0
        for i in tree.query(g, predicate="intersects"):
            if i not in free:
                continue
            inter = shapely.intersection(g, ref[i]).area
            union = shapely.union(g, ref[i]).area
            iou = inter / union if union else 0.0
            if iou > best_iou:
                best, best_iou = i, iou
        if best is not None and best_iou >= threshold:
            tp += 1
            free.discard(best)
    return ObjectScores(tp, len(pred) - tp, len(ref) - tp, threshold)
