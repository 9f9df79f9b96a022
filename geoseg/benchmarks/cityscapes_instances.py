"""Cityscapes instance-level semantic labelling, scored as cityscapesScripts' ``evalInstanceLevelSemanticLabeling``.

Predictions: one ``CITY_SEQ_FRAME*.txt`` per image (anywhere under the prediction folder) whose lines
read ``MASK.png LABEL_ID CONFIDENCE``, mask paths relative to the text file; a mask's non-zero
pixels are the instance. Ground truth: ``gtFine/SPLIT/CITY/*_gtFine_instanceIds.png``.

AP follows the official rules: overlaps 0.5:0.95 (step 0.05); a ground-truth instance counts only
from ``min_region_size`` pixels (official: 100); an unmatched prediction is not a false positive
when more than the overlap threshold of it lies on void, on crowd regions (ids below 1000) or on
instances below the minimum size; several matches of one instance count once, the others as false
positives; precision-recall is integrated as the official script does. This is a port (see
cityscapes.py for why), tested against the official script.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from geoseg.benchmarks.cityscapes import BY_ID, LABELS, Cityscapes, _frame, find_predictions
from geoseg.benchmarks.images import read_labels
from geoseg.benchmarks.registry import register
from geoseg.benchmarks.semantic import check_missing, publish
from geoseg.errors import GeosegError

INST_LABELS = [lb.name for lb in LABELS if lb.has_instances and not lb.ignore]
VOID_IDS = [lb.id for lb in LABELS if lb.ignore]
OVERLAPS = np.arange(0.5, 1.0, 0.05)


@dataclass
class GtInstance:
    inst_id: int
    pixels: int
    matched: list = field(default_factory=list)  # (pixels, intersection, confidence) of overlapping predictions


@dataclass
class PredInstance:
    pixels: int
    confidence: float
    void: int
    matched: list = field(default_factory=list)  # (inst_id, pixels, intersection) of overlapping ground truth


@dataclass(frozen=True)
class Pair:
    name: str
    prediction: str | None
    reference: str


def read_prediction_list(path: str, root: str) -> list[tuple[str, int, float]]:
    out = {}
    with open(path) as f:
        for n, line in enumerate(f, 1):
            parts = line.split(" ")
            if not line.strip():
                continue
            if len(parts) != 3:
                raise GeosegError(f"line {n}: expected 'MASK.png LABEL_ID CONFIDENCE'", path)
            if os.path.isabs(parts[0]):
                raise GeosegError(f"line {n}: mask paths must be relative to the text file", path)
            mask = os.path.abspath(os.path.join(os.path.dirname(path), parts[0]))
            if os.path.commonprefix([mask, root]) != root:
                raise GeosegError(f"line {n}: {parts[0]} points outside the prediction folder", path)
            try:
                out[mask] = (int(float(parts[1])), float(parts[2]))
            except ValueError:
                raise GeosegError(f"line {n}: label id and confidence must be numbers", path) from None
    return [(m, lab, conf) for m, (lab, conf) in out.items()]


def match_image(pair: Pair, root: str) -> tuple[dict, dict]:
    """Ground-truth and predicted instances of one image with their pairwise intersections."""
    gt = read_labels(pair.reference, "instance ground truth").astype(np.int64)
    values, inv, counts = np.unique(gt, return_inverse=True, return_counts=True)
    inv = inv.reshape(gt.shape)
    gts: dict[str, list[GtInstance]] = {n: [] for n in INST_LABELS}
    for v, c in zip(values.tolist(), counts.tolist()):
        lab = BY_ID.get(v // 1000 if v >= 1000 else v)
        if lab is not None and lab.name in gts:
            gts[lab.name].append(GtInstance(v, c))
    void = np.isin(gt, VOID_IDS)
    preds: dict[str, list[PredInstance]] = {n: [] for n in INST_LABELS}
    for mask_path, label_id, conf in read_prediction_list(pair.prediction, root):
        lab = BY_ID.get(label_id)
        if lab is None or lab.name not in preds:
            continue
        from PIL import Image

        try:
            with Image.open(mask_path) as img:
                mask = np.asarray(img.convert("L")) != 0
        except (OSError, ValueError) as exc:
            raise GeosegError(f"cannot read the mask listed in {Path(pair.prediction).name} ({exc})", mask_path) \
                from None
        if mask.shape != gt.shape:
            raise GeosegError(f"is {mask.shape[1]}x{mask.shape[0]} px but its ground truth {pair.reference} is "
                              f"{gt.shape[1]}x{gt.shape[0]} px", mask_path)
        px = int(np.count_nonzero(mask))
        if not px:
            continue
        p = PredInstance(px, conf, int(np.count_nonzero(void & mask)))
        inter = np.bincount(inv[mask], minlength=len(values))
        for g in gts[lab.name]:  # the official order: ground truth by ascending id
            k = int(np.searchsorted(values, g.inst_id))
            if inter[k] > 0:
                p.matched.append((g.inst_id, g.pixels, int(inter[k])))
                g.matched.append((px, int(inter[k]), conf))
        preds[lab.name].append(p)
    return gts, preds


def average_precision(matches: list[tuple[dict, dict]], label: str, overlap: float, min_size: int) -> float:
    y_true: list[float] = []
    y_score: list[float] = []
    hard_fns = 0
    have_gt = have_pred = False
    for gts_all, preds_all in matches:
        preds = preds_all[label]
        gts = [g for g in gts_all[label] if g.inst_id >= 1000 and g.pixels >= min_size]
        have_gt |= bool(gts)
        have_pred |= bool(preds)
        cur_true = [1.0] * len(gts)
        cur_score = [-math.inf] * len(gts)
        cur_match = [False] * len(gts)
        for i, g in enumerate(gts):
            found = False
            for px, inter, conf in g.matched:
                if float(inter) / (g.pixels + px - inter) > overlap:
                    if cur_match[i]:  # a second match: the lower score is a false positive
                        lo, hi = min(cur_score[i], conf), max(cur_score[i], conf)
                        cur_score[i] = hi
                        cur_true.append(0.0)
                        cur_score.append(lo)
                        cur_match.append(True)
                    else:
                        found = True
                        cur_match[i] = True
                        cur_score[i] = conf
            if not found:
                hard_fns += 1
        y_true += [t for t, m in zip(cur_true, cur_match) if m]
        y_score += [s for s, m in zip(cur_score, cur_match) if m]
        for p in preds:
            if any(float(inter) / (px + p.pixels - inter) > overlap for _, px, inter in p.matched):
                continue
            ignore = p.void
            for inst_id, px, inter in p.matched:
                if inst_id < 1000:
                    ignore += inter
                if px < min_size:
                    ignore += inter
            if float(ignore) / p.pixels <= overlap:
                y_true.append(0.0)
                y_score.append(p.confidence)
    if not have_gt:
        return float("nan")
    if not have_pred:
        return 0.0
    y_true_a, y_score_a = np.array(y_true), np.array(y_score)
    order = np.argsort(y_score_a)
    scores, truth = y_score_a[order], y_true_a[order]
    cum = np.cumsum(truth)
    _, first = np.unique(scores, return_index=True)
    n_pr = len(first) + 1
    n, n_true = len(scores), cum[-1]
    precision, recall = np.zeros(n_pr), np.zeros(n_pr)
    cum = np.append(cum, 0)
    for k, idx in enumerate(first):
        c = cum[idx - 1]
        tp = n_true - c
        fp = n - idx - tp
        fn = c + hard_fns
        precision[k] = float(tp) / (tp + fp)
        recall[k] = float(tp) / (tp + fn)
    precision[-1], recall[-1] = 1.0, 0.0
    conv = np.append(np.append(recall[0], recall), 0.0)
    steps = np.convolve(conv, [-0.5, 0, 0.5], "valid")
    return float(np.dot(precision, steps))


def _null(v: float):
    return None if v != v else float(v)


class CityscapesInstances:
    name = "cityscapes-instances"
    kind = "instances"
    summary = "Cityscapes instance-level semantic labelling: AP over overlaps 0.5:0.95 and AP50, 8 classes"
    layout = "ROOT/gtFine/SPLIT/CITY/*_gtFine_instanceIds.png; predictions: CITY_SEQ_FRAME*.txt + mask PNGs"
    conventions = ("official minimum region size 100 px (--min-region-size), void and crowd overlap not counted "
                   "as false positives, the official precision-recall integration; NaN for classes without "
                   "ground truth")

    def pairs(self, predictions, root, split: str) -> list[Pair]:
        if not Path(predictions).is_dir():
            raise GeosegError("predictions must be a folder of CITY_SEQ_FRAME*.txt files", predictions)
        labels = Cityscapes().ground_truth(root, split)
        gts = [Path(str(p).replace("_gtFine_labelIds.png", "_gtFine_instanceIds.png")) for p in labels]
        missing = [g for g in gts if not g.exists()]
        if missing:
            raise GeosegError(f"{len(missing)} instanceIds files are missing, e.g. {missing[0].name}", missing[0].parent)
        frames = [_frame(str(g)) for g in gts]
        found = find_predictions(predictions, frames, ".txt")
        return [Pair(f, found[f], str(g)) for f, g in zip(frames, gts)]

    def evaluate(self, predictions, output, root, split: str = "val", min_region_size: int = 100,
                 allow_missing: bool = False, overwrite: bool = False) -> dict:
        pairs = check_missing(self.pairs(predictions, root, split), allow_missing, str(predictions))
        pred_root = os.path.abspath(predictions)
        matches = [match_image(p, pred_root) for p in pairs]
        ap = np.array([[average_precision(matches, lab, float(o), min_region_size) for o in OVERLAPS]
                       for lab in INST_LABELS])
        o50 = int(np.flatnonzero(np.isclose(OVERLAPS, 0.5))[0])
        with warnings.catch_warnings():  # nanmean of an all-NaN row warns; the NaN is the answer
            warnings.simplefilter("ignore", RuntimeWarning)
            all_ap = float(np.nanmean(ap)) if np.isfinite(ap).any() else float("nan")
            all_ap50 = float(np.nanmean(ap[:, o50])) if np.isfinite(ap[:, o50]).any() else float("nan")
        report = {
            "schema_version": 1, "benchmark": {"adapter": self.name, "root": str(root), "split": split,
                                               "min_region_size": min_region_size},
            "inputs": [{"scene": p.name, "prediction": p.prediction, "reference": p.reference} for p in pairs],
            "instances": {
                "AP": _null(all_ap), "AP50": _null(all_ap50),
                "per_class": [{"name": lab, "AP": _null(float(np.average(ap[i]))), "AP50": _null(float(ap[i, o50]))}
                              for i, lab in enumerate(INST_LABELS)],
                "overlaps": [round(float(o), 2) for o in OVERLAPS],
            },
        }
        from geoseg.benchmarks.instance_report import html, markdown
        from geoseg.version import __version__

        report["geoseg_version"] = __version__
        publish(report, None, None, output, overwrite, markdown=markdown, html=html)
        return report


ADAPTER = register(CityscapesInstances())
