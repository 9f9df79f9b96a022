"""A benchmark as training data: ``geoseg train`` with ``data: {adapter: cityscapes, root: ..., split: train}``.

Each semantic adapter gives its image / mask pairs, its class table with training ids 0..K-1, and a
look-up table from mask values to those ids (255 = ignored): VOC's 21 classes as they are; Cityscapes
labelIds to its 19 trainIds; the folder layout's class list, with ``reduce_zero_label`` as
mmsegmentation applies it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from geoseg.benchmarks.images import LUT_SIZE
from geoseg.benchmarks.registry import get
from geoseg.classes import NODATA, ClassList
from geoseg.errors import GeosegError


@dataclass(frozen=True)
class TrainingSet:
    classes: ClassList
    files: dict  # name -> (image path, mask path)
    lut: np.ndarray  # mask value -> training class id, NODATA for ignored


def training_set(adapter: str, root, split: str | None = None, classes=None,
                 reduce_zero_label: bool = False) -> TrainingSet:
    ad = get(adapter)
    lut = np.full(LUT_SIZE, NODATA, dtype=np.uint8)
    root = Path(root)
    if ad.name == "voc":
        table = ad.classes()
        lut[[c.id for c in table]] = [c.id for c in table]
        images = dict(ad.images(root, split))
        files = {n: (images[n], root / "SegmentationClass" / f"{n}.png") for n in images}
    elif ad.name == "cityscapes":
        from geoseg.benchmarks.cityscapes import EVAL, _frame, class_list

        table = class_list(train_ids=True)
        for lb in EVAL:
            lut[lb.id] = lb.train_id
        gts = {_frame(str(g)): g for g in ad.ground_truth(root, split or "train")}
        files = {n: (p, gts[n]) for n, p in ad.images(root, split or "train") if n in gts}
    elif ad.name == "folder":
        table = ad.classes(root, classes)
        ids = np.array([c.id for c in table])
        if reduce_zero_label:
            lut[ids + 1] = ids
        else:
            lut[ids] = ids
        anns = {p.stem: p for p in ad._dir(root, "ann_dir", split).glob("*.png")}
        files = {n: (p, anns[n]) for n, p in ad.images(root, split) if n in anns}
    else:
        raise GeosegError(f"the {ad.name} adapter holds instances; train semantic models on voc, cityscapes or "
                          "folder data")
    if not files:
        raise GeosegError(f"no image with a mask in the {ad.name} layout", root)
    if not table.is_contiguous():
        raise GeosegError("training classes must have ids 0..K-1 in order", getattr(classes, "source", classes))
    return TrainingSet(table, files, lut)
