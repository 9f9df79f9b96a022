"""Panoptic quality (Kirillov et al.): PQ = SQ x RQ, counted exactly as the COCO panoptic scorer counts it.

The rules are those of ``pq_compute`` in panopticapi (and of cityscapesScripts' panoptic evaluation,
a copy of it), image by image (here: scene by scene):

- a reference segment and a predicted segment of the same category match when their IoU is above
  0.5, where the union leaves out the predicted segment's pixels on VOID (unlabelled) reference;
  matched pairs are true positives and add their IoU to the category's sum;
- an unmatched reference segment is a false negative, unless it is a crowd region;
- an unmatched predicted segment is a false positive, unless more than half of it lies on VOID plus
  the crowd region of its category (the last crowd segment of that category in the reference's
  segment order, as the scorer keeps it);
- per category ``PQ = sum IoU / (TP + FP/2 + FN/2)``, ``SQ = sum IoU / TP``, ``RQ = TP / (TP + FP/2 + FN/2)``;
  All, Things and Stuff average the categories with any TP, FP or FN.

Everything the rules need is the pixel count of every (reference segment, predicted segment) pair,
and those counts add up: :class:`PairCounts` of chunks sum to the whole image's, so a 16384² scene
scored chunk by chunk gives exactly the numbers of the whole arrays at once. Segment ids are
unsigned integers, 0 is VOID on both sides (as in the COCO format). The pair counts come from one
compiled pass over the pixels (``_counts_ext.pair_runs``: runs of one pair) and a sort of the runs,
not of the pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

VOID = 0


@dataclass
class PairCounts:
    """Pixel counts of (reference segment id, predicted segment id) pairs, each pair once, sorted."""

    ref: np.ndarray  # uint64
    pred: np.ndarray  # uint64
    count: np.ndarray  # int64

    @classmethod
    def empty(cls) -> PairCounts:
        return cls(np.zeros(0, np.uint64), np.zeros(0, np.uint64), np.zeros(0, np.int64))

    @classmethod
    def of(cls, reference: np.ndarray, prediction: np.ndarray) -> PairCounts:
        """The pair counts of two segment-id images of one shape (any unsigned or non-negative integer type)."""
        from geoseg.evaluation._counts_ext import pair_runs

        if reference.shape != prediction.shape:
            raise ValueError(f"segment images differ in shape: {reference.shape} and {prediction.shape}")
        dtype = np.uint32 if reference.dtype.itemsize <= 4 and prediction.dtype.itemsize <= 4 else np.uint64
        ra, rb, rn = pair_runs(np.ascontiguousarray(reference, dtype=dtype).ravel(),
                               np.ascontiguousarray(prediction, dtype=dtype).ravel())
        return _aggregate(ra.astype(np.uint64), rb.astype(np.uint64), rn)

    @classmethod
    def concat(cls, parts: list[PairCounts]) -> PairCounts:
        parts = [p for p in parts if len(p.count)]
        if not parts:
            return cls.empty()
        if len(parts) == 1:
            return parts[0]
        return _aggregate(np.concatenate([p.ref for p in parts]), np.concatenate([p.pred for p in parts]),
                          np.concatenate([p.count for p in parts]))

    def __add__(self, other: PairCounts) -> PairCounts:
        return PairCounts.concat([self, other])

    def areas(self, side: str) -> dict[int, int]:
        """Pixels of every segment id of one side (``"ref"`` or ``"pred"``), VOID included."""
        ids = self.ref if side == "ref" else self.pred
        u, inv = np.unique(ids, return_inverse=True)
        return dict(zip(u.tolist(), np.bincount(inv, weights=self.count, minlength=len(u)).astype(np.int64).tolist()))


def _aggregate(ra: np.ndarray, rb: np.ndarray, rn: np.ndarray) -> PairCounts:
    if not len(rn):
        return PairCounts.empty()
    order = np.lexsort((rb, ra))
    ra, rb, rn = ra[order], rb[order], rn[order]
    new = np.ones(len(ra), dtype=bool)
    new[1:] = (ra[1:] != ra[:-1]) | (rb[1:] != rb[:-1])
    starts = np.flatnonzero(new)
    return PairCounts(ra[starts], rb[starts], np.add.reduceat(rn, starts).astype(np.int64))


@dataclass(frozen=True)
class Segment:
    """A reference or predicted segment: its category, whether it is a crowd region, its area (None: from
    the pixels)."""

    category: int
    iscrowd: bool = False
    area: int | None = None


@dataclass
class CategoryStats:
    """One category's matches over any number of images: the IoU sum and TP, FP, FN."""

    iou: float = 0.0
    tp: int = 0
    fp: int = 0
    fn: int = 0

    def __iadd__(self, other: CategoryStats) -> CategoryStats:
        self.iou += other.iou
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn
        return self

    def scores(self) -> dict:
        d = self.tp + 0.5 * self.fp + 0.5 * self.fn
        if self.tp + self.fp + self.fn == 0:
            return {"pq": 0.0, "sq": 0.0, "rq": 0.0}
        return {"pq": self.iou / d, "sq": self.iou / self.tp if self.tp else 0, "rq": self.tp / d}


@dataclass
class PanopticStats:
    """Per-category statistics, summed over images or scenes."""

    categories: dict[int, CategoryStats] = field(default_factory=dict)

    def __getitem__(self, category: int) -> CategoryStats:
        return self.categories.setdefault(category, CategoryStats())

    def __iadd__(self, other: PanopticStats) -> PanopticStats:
        for c, s in other.categories.items():
            self.categories.setdefault(c, CategoryStats()).__iadd__(s)
        return self

    def average(self, isthing: dict[int, bool], which: bool | None = None) -> tuple[dict, dict]:
        """``pq_average``: the mean over categories (of ``isthing``'s, filtered to things, stuff or all) that
        have any TP, FP or FN, and every category's own scores. With no such category the means are NaN
        (where the scorer divides by zero)."""
        pq = sq = rq = 0.0
        n = 0
        per = {}
        for cat, thing in isthing.items():
            if which is not None and which != thing:
                continue
            s = self.categories.get(cat, CategoryStats())
            per[cat] = s.scores()
            if s.tp + s.fp + s.fn == 0:
                continue
            n += 1
            pq += per[cat]["pq"]
            sq += per[cat]["sq"]
            rq += per[cat]["rq"]
        if n == 0:
            return {"pq": math.nan, "sq": math.nan, "rq": math.nan, "n": 0}, per
        return {"pq": pq / n, "sq": sq / n, "rq": rq / n, "n": n}, per

    def summary(self, isthing: dict[int, bool]) -> dict:
        """The scorer's result: All, Things and Stuff, and ``per_class`` (with the counts)."""
        out = {}
        for name, which in (("All", None), ("Things", True), ("Stuff", False)):
            out[name], per = self.average(isthing, which)
            if which is None:
                out["per_class"] = {c: {**v, "tp": self[c].tp, "fp": self[c].fp, "fn": self[c].fn,
                                        "iou_sum": self[c].iou} for c, v in per.items()}
        return out


def panoptic_block(stats: PanopticStats, categories: dict[int, dict]) -> dict:
    """A report's ``panoptic`` block: All, Things, Stuff (NaN as None) and a row per category
    (``categories``: id -> a mapping with ``name`` and ``isthing``, in report order)."""
    isthing = {c: bool(v.get("isthing", 0)) for c, v in categories.items()}
    res = stats.summary(isthing)

    def num(v):
        return None if v != v else float(v)

    block = {k: {"pq": num(res[k]["pq"]), "sq": num(res[k]["sq"]), "rq": num(res[k]["rq"]), "n": res[k]["n"]}
             for k in ("All", "Things", "Stuff")}
    block["per_class"] = [{"id": c, "name": categories[c].get("name", str(c)), "isthing": isthing[c],
                           **{k: float(v) if k in ("pq", "sq", "rq", "iou_sum") else int(v)
                              for k, v in res["per_class"][c].items()}} for c in categories]
    return block


class SegmentError(ValueError):
    """A segment id that the pixels and the segment list disagree on (the caller names the file)."""


def match_segments(pairs: PairCounts, reference: dict[int, Segment], prediction: dict[int, Segment],
                   check: bool = True) -> PanopticStats:
    """One image's (or scene's) statistics from its pair counts and segment lists.

    ``reference`` and ``prediction`` map segment ids to segments, in the segment lists' order; VOID (0) is
    in neither. Predicted areas always come from the pixels; reference areas from the segment where given
    (the COCO JSON's ``area``, as the scorer takes them), else from the pixels. ``check``: every predicted
    id in the pixels must be listed and every listed one present (the scorer's checks), else
    :class:`SegmentError`.
    """
    stats = PanopticStats()
    pred_area = pairs.areas("pred")
    if check:
        missing = [p for p in pred_area if p != VOID and p not in prediction]
        if missing:
            raise SegmentError(f"segment {missing[0]} is in the image but not in the segment list")
        absent = [p for p in prediction if p not in pred_area]
        if absent:
            raise SegmentError(f"segment {absent[0]} is in the segment list but not in the image")
    ref_area = None
    gt_pred = {}
    for r, p, n in zip(pairs.ref.tolist(), pairs.pred.tolist(), pairs.count.tolist()):
        gt_pred[(r, p)] = n
    gt_matched, pred_matched = set(), set()
    for (r, p), inter in gt_pred.items():
        g = reference.get(r)
        q = prediction.get(p)
        if g is None or q is None or g.iscrowd or g.category != q.category:
            continue
        if g.area is None:
            if ref_area is None:
                ref_area = pairs.areas("ref")
            ga = ref_area.get(r, 0)
        else:
            ga = g.area
        union = pred_area[p] + ga - inter - gt_pred.get((VOID, p), 0)
        iou = inter / union
        if iou > 0.5:
            s = stats[g.category]
            s.tp += 1
            s.iou += iou
            gt_matched.add(r)
            pred_matched.add(p)
    crowd = {}
    for r, g in reference.items():
        if r in gt_matched:
            continue
        if g.iscrowd:
            crowd[g.category] = r
            continue
        stats[g.category].fn += 1
    for p, q in prediction.items():
        if p in pred_matched or p not in pred_area:
            continue
        inter = gt_pred.get((VOID, p), 0)
        if q.category in crowd:
            inter += gt_pred.get((crowd[q.category], p), 0)
        if inter / pred_area[p] > 0.5:
            continue
        stats[q.category].fp += 1
    return stats


# -- segments of class and instance rasters ------------------------------------------------------------

CLASS_SHIFT = 32  # raster segment ids: (class id + 1) << 32 | instance id; 0 is VOID


def raster_segment_ids(classes: np.ndarray, instances: np.ndarray, void: np.ndarray, things: np.ndarray
                       ) -> np.ndarray:
    """Segment ids of a (class id, instance id) raster pair: ``(class + 1) << 32 | instance`` for things,
    ``(class + 1) << 32`` for stuff (one segment per class, whatever the instance band holds), 0 where
    ``void``. ``things`` is a boolean lookup table over class ids 0..255; class values outside it must be
    ``void``. One uint64 array is made, the rest is in place."""
    cls = np.minimum(classes, len(things) - 1) if classes.dtype.kind == "u" else np.clip(classes, 0, len(things) - 1)
    thing = things[cls]
    ids = cls.astype(np.uint64)
    ids += np.uint64(1)
    ids <<= np.uint64(CLASS_SHIFT)
    inst = instances if instances.dtype.kind == "u" else instances.astype(np.uint64)
    np.bitwise_or(ids, inst, out=ids, where=thing)
    ids[void] = VOID
    return ids


def raster_segments(ids, things: np.ndarray, reference: bool) -> dict[int, Segment]:
    """Segments of raster segment ids (VOID left out), in ascending id order; on the ``reference`` side a
    thing class's pixels without an instance (instance 0) are that class's crowd region."""
    out = {}
    for s in sorted(int(i) for i in ids if i != VOID):
        cls, inst = (s >> CLASS_SHIFT) - 1, s & ((1 << CLASS_SHIFT) - 1)
        thing = bool(things[cls]) if 0 <= cls < len(things) else False
        out[s] = Segment(cls, iscrowd=reference and thing and inst == 0)
    return out


def split_segment_id(s: int) -> tuple[int, int]:
    """(class id, instance id) of a raster segment id."""
    return (s >> CLASS_SHIFT) - 1, s & ((1 << CLASS_SHIFT) - 1)
