"""Cityscapes panoptic: PQ over the 19 evaluation classes (8 things, 11 stuff), as cityscapesScripts scores it.

cityscapesScripts' panoptic evaluation (``evalPanopticSemanticLabeling``) is the COCO panoptic scorer on
the COCO panoptic form of gtFine, which its ``createPanopticImgs`` writes as
``ROOT/gtFine/cityscapes_panoptic_SPLIT.json`` beside the folder ``cityscapes_panoptic_SPLIT``. That
conversion is used where it exists; otherwise the same conversion runs here in memory, frame by frame,
from ``*_gtFine_instanceIds.png``: a pixel's segment id is its instanceIds value (labelId for stuff and
for a thing class's group regions, labelId x 1000 + k for instances), labels ignored in evaluation are
VOID, and a thing class's group region (a value below 1000) is a crowd region. Categories are the
labelIds of the evaluation classes, ``isthing`` where the class has instances.

Predictions are a COCO panoptic results JSON (``image_id`` = the frame, ``city_seq_frame``) beside its
PNG folder, or a folder that holds one such JSON and its PNG folder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from geoseg.benchmarks.cityscapes import EVAL, LABELS
from geoseg.benchmarks.coco_panoptic import PanopticSet, _publish, report_of, score
from geoseg.benchmarks.registry import register
from geoseg.benchmarks.voc import require
from geoseg.errors import GeosegError
from geoseg.evaluation.panoptic import Segment

SUFFIX = "_gtFine_instanceIds.png"


def categories() -> list[dict]:
    """createPanopticImgs' categories (labelIds)."""
    return [{"id": lb.id, "name": lb.name, "color": list(lb.color), "supercategory": lb.category,
             "isthing": 1 if lb.has_instances else 0} for lb in EVAL]


def convert_frame(instance_ids: np.ndarray) -> tuple[np.ndarray, list[dict]]:
    """createPanopticImgs on one frame: segment ids (uint32, 0 = VOID) and its segments_info."""
    by_id = {lb.id: lb for lb in LABELS if lb.id >= 0}
    values = instance_ids.astype(np.int64)
    out = np.zeros(values.shape, dtype=np.uint32)
    info = []
    present, inverse = np.unique(values, return_inverse=True)
    area = np.bincount(inverse.ravel(), minlength=len(present))
    inverse = inverse.reshape(values.shape)
    keep = np.zeros(len(present), dtype=bool)
    for k, v in enumerate(present.tolist()):
        sem, crowd = (v, 1) if v < 1000 else (v // 1000, 0)
        lb = by_id.get(sem)
        if lb is None:
            raise GeosegError(f"instanceIds value {v} is no Cityscapes label")
        if lb.ignore:
            continue
        if not lb.has_instances:
            crowd = 0
        keep[k] = True
        ys, xs = np.nonzero(inverse == k)
        info.append({"id": int(v), "category_id": int(lb.id), "area": int(area[k]),
                     "bbox": [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)],
                     "iscrowd": crowd})
    lut = np.where(keep, present, 0).astype(np.uint32)
    out[...] = lut[inverse]
    return out, info


class _ConvertedGroundTruth(PanopticSet):
    """gtFine instanceIds converted on the fly (nothing written)."""

    def __init__(self, files: list[Path]) -> None:
        self.path, self.role = files[0].parent.parent, "ground truth"
        self.files = {f.name[: -len(SUFFIX)]: f for f in files}
        self.data = {"categories": categories()}
        self.annotations = [{"image_id": frame, "file_name": f.name, "segments_info": None}
                            for frame, f in self.files.items()]

    def read(self, ann: dict, categories: dict | None = None):
        from geoseg.benchmarks.images import read_labels

        file = self.files[ann["image_id"]]
        ids, info = convert_frame(read_labels(str(file), "ground truth"))
        return ids, {s["id"]: Segment(s["category_id"], bool(s["iscrowd"]), s["area"]) for s in info}, file


def ground_truth(root, split: str) -> PanopticSet:
    gt = require(Path(root) / "gtFine", "Cityscapes")
    converted = gt / f"cityscapes_panoptic_{split}.json"
    if converted.is_file():
        return PanopticSet(converted)
    folder = require(gt / split, "Cityscapes gtFine split")
    files = sorted(folder.glob(f"*/*{SUFFIX}"))
    if not files:
        raise GeosegError(f"no {converted.name} and no *{SUFFIX} files to convert", folder)
    return _ConvertedGroundTruth(files)


def results_json(predictions) -> Path:
    p = Path(predictions)
    if p.is_file():
        return p
    if not p.is_dir():
        raise GeosegError("no such file or folder", p)
    found = [j for j in sorted(p.glob("*.json")) if j.with_suffix("").is_dir()]
    if len(found) != 1:
        raise GeosegError("give the results JSON, or a folder holding exactly one JSON beside its PNG folder "
                          f"(found {len(found)})", p)
    return found[0]


class CityscapesPanoptic:
    name = "cityscapes-panoptic"
    kind = "panoptic"
    summary = "Cityscapes panoptic: PQ, SQ, RQ over the 19 classes (things, stuff, all), cityscapesScripts' rules"
    layout = ("ROOT/gtFine/SPLIT/CITY/*_gtFine_instanceIds.png (or createPanopticImgs' cityscapes_panoptic_SPLIT.json"
              " and folder); predictions: a COCO panoptic results JSON beside its PNG folder")
    conventions = ("createPanopticImgs' conversion (labelIds categories, group regions as crowd, ignored labels "
                   "VOID) and the COCO panoptic scorer's matching")

    def evaluate(self, predictions, output, root, split: str = "val", allow_missing: bool = False,
                 overwrite: bool = False) -> dict:
        report = self.score(predictions, root, split, allow_missing)
        _publish(report, output, overwrite)
        return report

    def prediction_targets(self, root, split=None, annotations=None) -> tuple[list, list]:
        """(frame, frame, leftImg8bit path) of the split's images, and the 19 classes as categories."""
        from geoseg.benchmarks.cityscapes import Cityscapes

        if annotations is not None:
            raise GeosegError("--annotations does not apply to cityscapes-panoptic (give --root and --split)")
        return [(f, f, p) for f, p in Cityscapes().images(root, split or "val")], categories()

    def score(self, predictions, root, split: str = "val", allow_missing: bool = False) -> dict:
        stats, cats, images = score(results_json(predictions), ground_truth(root, split), allow_missing=allow_missing)
        return report_of(self.name, stats, cats, images, root=str(root), split=split)


ADAPTER = register(CityscapesPanoptic())
