"""Cityscapes pixel-level semantic labelling, scored as cityscapesScripts' ``evalPixelLevelSemanticLabeling``.

Ground truth ``gtFine/SPLIT/CITY/*_gtFine_labelIds.png`` (and ``*_gtFine_instanceIds.png`` for iIoU);
predictions are labelIds PNGs found by the ``city_seq_frame`` prefix anywhere under the prediction
folder, as cityscapesScripts finds them (``--train-ids`` accepts trainIds PNGs instead).

The official conventions: 34 labelIds form the confusion matrix; pixels whose ground truth is an
ignored label are not counted; a prediction of an ignored label is a miss (it adds to the false
negatives of the true class and to no false positive). iIoU weighs each ground-truth instance's
true-positive and false-negative pixels by the class's average instance size over the instance's
size (the official averages). Categories merge their labels. Undefined scores are NaN and left
out of the means.

Why a port and not cityscapesScripts itself: its 2.3.0 release fails on numpy >= 2.4 (``np.in1d``),
writes into its installed package, and loops per instance over full-size masks. The tests check this
module against it, run in its own environment (see tests/test_benchmarks_cityscapes.py).
"""

from __future__ import annotations

import fnmatch
import os
from collections import namedtuple
from pathlib import Path

import numpy as np

from geoseg.benchmarks.images import LUT_SIZE, read_labels
from geoseg.benchmarks.registry import register
from geoseg.benchmarks.semantic import (
    LabelCoding,
    Pair,
    check_missing,
    publish,
    score_pairs,
    semantic_report,
)
from geoseg.benchmarks.voc import require
from geoseg.classes import ClassList, SegClass
from geoseg.errors import GeosegError
from geoseg.evaluation.metrics import instance_counts

Label = namedtuple("Label", "name id train_id category has_instances ignore color")

# The Cityscapes label table (cityscapesScripts ``helpers/labels.py``; tests compare the two).
LABELS = tuple(Label(*row) for row in (
    ("unlabeled", 0, 255, "void", False, True, (0, 0, 0)),
    ("ego vehicle", 1, 255, "void", False, True, (0, 0, 0)),
    ("rectification border", 2, 255, "void", False, True, (0, 0, 0)),
    ("out of roi", 3, 255, "void", False, True, (0, 0, 0)),
    ("static", 4, 255, "void", False, True, (0, 0, 0)),
    ("dynamic", 5, 255, "void", False, True, (111, 74, 0)),
    ("ground", 6, 255, "void", False, True, (81, 0, 81)),
    ("road", 7, 0, "flat", False, False, (128, 64, 128)),
    ("sidewalk", 8, 1, "flat", False, False, (244, 35, 232)),
    ("parking", 9, 255, "flat", False, True, (250, 170, 160)),
    ("rail track", 10, 255, "flat", False, True, (230, 150, 140)),
    ("building", 11, 2, "construction", False, False, (70, 70, 70)),
    ("wall", 12, 3, "construction", False, False, (102, 102, 156)),
    ("fence", 13, 4, "construction", False, False, (190, 153, 153)),
    ("guard rail", 14, 255, "construction", False, True, (180, 165, 180)),
    ("bridge", 15, 255, "construction", False, True, (150, 100, 100)),
    ("tunnel", 16, 255, "construction", False, True, (150, 120, 90)),
    ("pole", 17, 5, "object", False, False, (153, 153, 153)),
    ("polegroup", 18, 255, "object", False, True, (153, 153, 153)),
    ("traffic light", 19, 6, "object", False, False, (250, 170, 30)),
    ("traffic sign", 20, 7, "object", False, False, (220, 220, 0)),
    ("vegetation", 21, 8, "nature", False, False, (107, 142, 35)),
    ("terrain", 22, 9, "nature", False, False, (152, 251, 152)),
    ("sky", 23, 10, "sky", False, False, (70, 130, 180)),
    ("person", 24, 11, "human", True, False, (220, 20, 60)),
    ("rider", 25, 12, "human", True, False, (255, 0, 0)),
    ("car", 26, 13, "vehicle", True, False, (0, 0, 142)),
    ("truck", 27, 14, "vehicle", True, False, (0, 0, 70)),
    ("bus", 28, 15, "vehicle", True, False, (0, 60, 100)),
    ("caravan", 29, 255, "vehicle", True, True, (0, 0, 90)),
    ("trailer", 30, 255, "vehicle", True, True, (0, 0, 110)),
    ("train", 31, 16, "vehicle", True, False, (0, 80, 100)),
    ("motorcycle", 32, 17, "vehicle", True, False, (0, 0, 230)),
    ("bicycle", 33, 18, "vehicle", True, False, (119, 11, 32)),
    ("license plate", -1, -1, "vehicle", False, True, (0, 0, 142)),
))
BY_ID = {lb.id: lb for lb in LABELS if lb.id >= 0}
NUM_IDS = 34
EVAL = [lb for lb in LABELS if lb.id >= 0 and not lb.ignore]  # the 19 evaluation classes, labelId order
CATEGORIES = list(dict.fromkeys(lb.category for lb in LABELS))
# cityscapesScripts' average instance sizes (px) for iIoU, from evalPixelLevelSemanticLabeling.py
AVG_CLASS_SIZE = {"bicycle": 4672.3249222261, "caravan": 36771.8241758242, "motorcycle": 6298.7200839748,
                  "rider": 3930.4788056518, "bus": 35732.1511111111, "train": 67583.7075812274,
                  "car": 12794.0202738185, "person": 3462.4756337644, "truck": 27855.1264367816,
                  "trailer": 16926.9763313609}
TRAIN_TO_ID = np.zeros(256, dtype=np.uint8)  # trainIds -> labelIds; 255 (and anything unknown) -> 0 unlabeled
for _lb in EVAL:
    TRAIN_TO_ID[_lb.train_id] = _lb.id
# labelIds that trainIds PNGs use but a labelIds prediction would not (void or ignored labelIds)
_TRAIN_ID_TELLS = {1, 2, 3, 4, 5, 6, 9, 10, 14, 15, 16, 18, 255}


def class_list(train_ids: bool = False) -> ClassList:
    """The 19 evaluation classes, by labelId (or by trainId)."""
    return ClassList(tuple(SegClass(lb.train_id if train_ids else lb.id, lb.name, "#{:02x}{:02x}{:02x}".format(*lb.color))
                           for lb in EVAL))


def coding(train_ids: bool = False) -> LabelCoding:
    """34 x 34 labelId matrix: ignored ground-truth labels dropped, every predicted labelId a column."""
    ignored = [lb.id for lb in LABELS if lb.id >= 0 and lb.ignore]
    return LabelCoding.from_maps(class_list(), NUM_IDS, {lb.id: lb.id for lb in EVAL}, ignored,
                                 {i: i for i in range(NUM_IDS)},
                                 "Cityscapes labelIds are 0..33; pass --train-ids for trainIds PNGs",
                                 None if train_ids else refuse_train_ids)


def _frame(path: str) -> str:
    parts = Path(path).name.split("_")
    if len(parts) < 3:
        raise GeosegError("not a Cityscapes file name (CITY_SEQ_FRAME_...)", path)
    return "_".join(parts[:3])


def find_predictions(folder, frames: list[str], pattern: str) -> dict[str, str | None]:
    """Each frame's prediction: the one file under ``folder`` matching ``city_seq_frame*{pattern}``."""
    walk = [(root, files) for root, _, files in os.walk(folder)]
    found: dict[str, str | None] = {}
    for f in frames:
        hits = [os.path.join(r, n) for r, files in walk for n in fnmatch.filter(files, f"{f}*{pattern}")]
        if len(hits) > 1:
            raise GeosegError(f"several predictions for {f}: {', '.join(Path(h).name for h in hits[:4])}", folder)
        found[f] = hits[0] if hits else None
    return found


def read_prediction(path: str, train_ids: bool) -> np.ndarray:
    pred = read_labels(path, "prediction")
    if not train_ids:
        return pred
    if pred.dtype != np.uint8 and pred.size and pred.max() > 255:
        raise GeosegError("--train-ids: values above 255 are not trainIds (0..18, 255)", path)
    bad = np.flatnonzero(np.bincount(pred.ravel(), minlength=256)[19:255]) + 19
    if bad.size:
        raise GeosegError(f"--train-ids: values {bad[:8].tolist()} are not trainIds (0..18, 255)", path)
    return TRAIN_TO_ID[pred]


def refuse_train_ids(path: str, pred: np.ndarray, values, illegal: bool) -> None:
    """Refuse a labelIds prediction that holds only trainIds (0..18 and 255), among them ids no labelIds model
    predicts."""
    values = {int(v) for v in values}
    if illegal:
        values |= {int(v) for v in np.unique(pred[pred >= NUM_IDS])}
    if values and values <= set(range(19)) | {255} and values & _TRAIN_ID_TELLS:
        raise GeosegError("looks like trainIds (values only in 0..18 and 255), not labelIds; pass --train-ids "
                          "if it is", path)


class InstanceWeights:
    """Per-image iIoU terms: weighted true positives and false negatives per class and per category."""

    # category -> labelIds of that category with instances (cityscapesScripts' ``generateInstanceStats``)
    CATEGORY_IDS = {c: [lb.id for lb in LABELS if lb.category == c and lb.id >= 0]
                    for c in CATEGORIES
                    if all(lb.has_instances for lb in LABELS if lb.category == c and lb.id >= 0)}

    def __init__(self) -> None:
        table = np.zeros((NUM_IDS, LUT_SIZE), dtype=np.uint8)  # [instance labelId, predicted value] -> in its category
        for ids in self.CATEGORY_IDS.values():
            for i in ids:
                table[i, ids] = 1
        self.in_category = table
        self.avg = np.zeros(NUM_IDS)
        for lb in EVAL:
            if lb.has_instances:
                self.avg[lb.id] = AVG_CLASS_SIZE[lb.name]

    def __call__(self, pred: np.ndarray, ref: np.ndarray, pair: Pair) -> dict:
        inst_path = pair.reference.replace("labelIds", "instanceIds")
        inst = read_labels(inst_path, "instance ground truth")
        if inst.shape != pred.shape:
            raise GeosegError("size differs from its labelIds image", inst_path)
        size, hit, cat_hit = instance_counts(inst, pred, self.in_category, 1000)
        present = np.flatnonzero(size)
        lab = present // 1000
        keep = (lab < NUM_IDS) & np.isin(lab, [lb.id for lb in EVAL if lb.has_instances])
        present, lab = present[keep], lab[keep]
        n = size[present].astype(np.float64)
        w = self.avg[lab] / n
        tp, ctp = hit[present], cat_hit[present]
        out = {"tp_w": np.zeros(NUM_IDS), "fn_w": np.zeros(NUM_IDS), "cat_tp_w": {}, "cat_fn_w": {}}
        np.add.at(out["tp_w"], lab, tp * w)
        np.add.at(out["fn_w"], lab, (n - tp) * w)
        cats = np.array([BY_ID[i].category for i in lab], dtype=object)
        for c in self.CATEGORY_IDS:
            sel = cats == c
            out["cat_tp_w"][c] = float((ctp[sel] * w[sel]).sum())
            out["cat_fn_w"][c] = float(((n[sel] - ctp[sel]) * w[sel]).sum())
        return out


def _div(a: float, b: float) -> float:
    return float(a) / b if b else float("nan")


def official_scores(cm: np.ndarray, inst: dict) -> dict:
    """Class iIoU and category IoU / iIoU from the 34 x 34 matrix and the summed instance terms.

    (Class IoU comes from ``geoseg.evaluation.metrics`` like every other report; it is repeated here so the
    official formulas can be read in one place.)
    """
    cm = np.asarray(cm, dtype=np.int64)
    scored = [lb.id for lb in EVAL]
    classes = {}
    for lb in EVAL:
        tp = cm[lb.id, lb.id]
        fn = cm[lb.id, :].sum() - tp
        fp = cm[[i for i in scored if i != lb.id], lb.id].sum()
        iiou = _div(inst["tp_w"][lb.id], inst["tp_w"][lb.id] + fp + inst["fn_w"][lb.id]) if lb.has_instances \
            else float("nan")
        classes[lb.name] = {"iou": _div(tp, tp + fp + fn), "iiou": iiou}
    categories = []
    for c in CATEGORIES:
        ids = [lb.id for lb in EVAL if lb.category == c]
        if not ids:
            continue  # void: no evaluation label
        others = [i for i in scored if BY_ID[i].category != c]
        tp = cm[np.ix_(ids, ids)].sum()
        fn = cm[ids, :].sum() - tp
        fp = cm[np.ix_(others, ids)].sum()
        iiou = float("nan")
        if c in InstanceWeights.CATEGORY_IDS:
            fpi = cm[np.ix_(others, InstanceWeights.CATEGORY_IDS[c])].sum()
            t, f = inst["cat_tp_w"][c], inst["cat_fn_w"][c]
            iiou = _div(t, t + fpi + f)
        categories.append({"name": c, "iou": _div(tp, tp + fp + fn), "iiou": iiou})
    return {"classes": classes, "categories": categories}


def _nanmean(values) -> float:
    v = [x for x in values if x == x]
    return sum(v) / len(v) if v else float("nan")


def _null(v):
    return None if v is None or v != v else float(v)


class Cityscapes:
    name = "cityscapes"
    kind = "semantic"
    summary = "Cityscapes pixel-level semantic labelling: IoU and iIoU, 19 classes and 7 categories"
    layout = ("ROOT/gtFine/SPLIT/CITY/*_gtFine_labelIds.png (+ _instanceIds.png), "
              "ROOT/leftImg8bit/SPLIT/CITY/*_leftImg8bit.png")
    conventions = ("labelIds predictions (--train-ids for trainIds), matched by city_seq_frame; ignored ground "
                   "truth not counted; a predicted ignored label is a miss; iIoU weighs instances by the "
                   "official average sizes; NaN where undefined")

    def classes(self, root=None) -> ClassList:
        return class_list()

    def ground_truth(self, root, split: str) -> list[Path]:
        gt = require(require(Path(root) / "gtFine", "Cityscapes") / split, "Cityscapes gtFine split")
        files = sorted(gt.glob("*/*_gtFine_labelIds.png"))
        if not files:
            raise GeosegError("no *_gtFine_labelIds.png files", gt)
        return files

    def images(self, root, split: str = "val") -> list[tuple[str, Path]]:
        folder = require(require(Path(root) / "leftImg8bit", "Cityscapes") / split, "Cityscapes leftImg8bit split")
        files = sorted(folder.glob("*/*_leftImg8bit.png"))
        if not files:
            raise GeosegError("no *_leftImg8bit.png images", folder)
        return [(_frame(str(f)), f) for f in files]

    def pairs(self, predictions, root, split: str) -> list[Pair]:
        if not Path(predictions).is_dir():
            raise GeosegError("predictions must be a folder of labelIds PNGs", predictions)
        gts = self.ground_truth(root, split)
        frames = [_frame(str(g)) for g in gts]
        found = find_predictions(predictions, frames, ".png")
        return [Pair(f, found[f], str(g)) for f, g in zip(frames, gts)]

    def evaluate(self, predictions, output, root, split: str = "val", train_ids: bool = False,
                 allow_missing: bool = False, overwrite: bool = False, threads: int | None = None) -> dict:
        pairs = check_missing(self.pairs(predictions, root, split), allow_missing, str(predictions))
        code = coding(train_ids)
        results = score_pairs(pairs, code, read_pred=lambda p: read_prediction(p, train_ids),
                              extra=InstanceWeights(), threads=threads)
        report = semantic_report(results, code, self.name, {"root": str(root), "split": split,
                                                            "train_ids": train_ids})
        total = {"tp_w": sum(r.extra["tp_w"] for r in results), "fn_w": sum(r.extra["fn_w"] for r in results),
                 "cat_tp_w": {c: sum(r.extra["cat_tp_w"][c] for r in results) for c in InstanceWeights.CATEGORY_IDS},
                 "cat_fn_w": {c: sum(r.extra["cat_fn_w"][c] for r in results) for c in InstanceWeights.CATEGORY_IDS}}
        official = official_scores(sum(r.conf.px for r in results), total)
        add_official(report, official)
        publish(report, results, code.classes, output, overwrite)
        return report

    def write_prediction(self, labels: np.ndarray, folder: Path, name: str, classes: ClassList) -> Path:
        """A model's class raster (trainIds or names of the 19 classes) as a labelIds PNG."""
        from geoseg.benchmarks.images import write_png
        from geoseg.benchmarks.voc import match_classes

        lut = match_classes(classes, class_list(), self.name, void=0)
        path = folder / f"{name}_labelIds.png"
        write_png(path, lut[labels])
        return path


def add_official(report: dict, official: dict) -> None:
    """The Cityscapes keys of report.json: per class ``iiou``, category scores and their means."""
    for row in report["classes"]:
        o = official["classes"][row["name"]]
        row["iiou"] = _null(o["iiou"])
    ov = report["overall"]
    ov["mean_iiou"] = _null(_nanmean(o["iiou"] for o in official["classes"].values()))
    report["categories"] = [{k: _null(v) if k != "name" else v for k, v in c.items()} for c in official["categories"]]
    ov["category_iou"] = _null(_nanmean(c["iou"] for c in official["categories"]))
    ov["category_iiou"] = _null(_nanmean(c["iiou"] for c in official["categories"]))


ADAPTER = register(Cityscapes())
