"""PASCAL VOC semantic segmentation: ``JPEGImages/``, ``SegmentationClass/`` palette PNGs, 255 = void."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from geoseg.benchmarks.registry import register
from geoseg.benchmarks.semantic import Pair, check_missing, identity_coding, publish, score_pairs, semantic_report
from geoseg.classes import ClassList, SegClass
from geoseg.errors import GeosegError

log = logging.getLogger("geoseg")

CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
           "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
           "tvmonitor")
VOID = 255


def colormap(n: int = 256) -> np.ndarray:
    """The standard VOC colour map (``VOCdevkit``'s ``labelcolormap``): bits of the index spread over R, G, B."""
    cmap = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        cmap[i] = (r, g, b)
    return cmap


def class_list() -> ClassList:
    cmap = colormap()
    return ClassList(tuple(SegClass(i, n, "#{:02x}{:02x}{:02x}".format(*tuple(cmap[i])), vectorize=i != 0)
                           for i, n in enumerate(CLASSES)))


def require(folder: Path, what: str) -> Path:
    if not folder.is_dir():
        raise GeosegError(f"not a {what} folder: {folder.name}/ is missing", folder.parent)
    return folder


class VOC:
    name = "voc"
    kind = "semantic"
    summary = "PASCAL VOC semantic segmentation (21 classes)"
    layout = ("ROOT/JPEGImages/*.jpg, ROOT/SegmentationClass/*.png (palette, 255 void), "
              "ROOT/ImageSets/Segmentation/SPLIT.txt (optional: without it every mask is scored)")
    conventions = ("predictions: palette or grey PNGs named like the masks; a predicted 255 is a miss; "
                   "scores summed over the dataset, not averaged per image; absent classes NaN, left out of means")

    def classes(self, root=None) -> ClassList:
        return class_list()

    def names(self, root, split: str | None) -> list[str]:
        root = Path(root)
        masks = require(root / "SegmentationClass", "VOC")
        listing = root / "ImageSets" / "Segmentation" / f"{split}.txt" if split else None
        if listing is not None and listing.is_file():
            names = [ln.split()[0] for ln in listing.read_text().splitlines() if ln.strip()]
        else:
            if listing is not None:
                log.warning("%s: no split file; scoring every mask in %s", listing, masks)
            names = sorted(p.stem for p in masks.glob("*.png"))
        if not names:
            raise GeosegError("no masks to score", masks)
        return names

    def images(self, root, split: str | None = None) -> list[tuple[str, Path]]:
        root = Path(root)
        folder = require(root / "JPEGImages", "VOC")
        out = []
        for n in self.names(root, split):
            hits = [folder / f"{n}{ext}" for ext in (".jpg", ".jpeg", ".png")]
            hit = next((h for h in hits if h.exists()), None)
            if hit is None:
                raise GeosegError(f"image {n} is listed but missing", folder)
            out.append((n, hit))
        return out

    def pairs(self, predictions, root, split: str | None) -> list[Pair]:
        root, preds = Path(root), Path(predictions)
        if not preds.is_dir():
            raise GeosegError("predictions must be a folder of PNGs named like the masks", preds)
        pairs = []
        for n in self.names(root, split):
            ref = root / "SegmentationClass" / f"{n}.png"
            if not ref.exists():
                raise GeosegError(f"ground truth for {n} is missing", ref.parent)
            pred = preds / f"{n}.png"
            pairs.append(Pair(n, str(pred) if pred.exists() else None, str(ref)))
        return pairs

    def evaluate(self, predictions, output, root, split: str | None = None, allow_missing: bool = False,
                 overwrite: bool = False, threads: int | None = None) -> dict:
        pairs = check_missing(self.pairs(predictions, root, split), allow_missing, str(predictions))
        coding = identity_coding(self.classes(), void=VOID)
        results = score_pairs(pairs, coding, threads=threads)
        report = semantic_report(results, coding, self.name, {"root": str(root), "split": split})
        publish(report, results, coding.classes, output, overwrite)
        return report

    def write_prediction(self, labels: np.ndarray, folder: Path, name: str, classes: ClassList) -> Path:
        """A model's class raster as a VOC palette PNG (classes matched to VOC's by name)."""
        from geoseg.benchmarks.images import write_png

        lut = match_classes(classes, self.classes(), self.name)
        path = folder / f"{name}.png"
        write_png(path, lut[labels], colormap())
        return path


def match_classes(model: ClassList, table: ClassList, adapter: str, void: int = VOID) -> np.ndarray:
    """A LUT from a model's class ids to a benchmark's, by class name; the model's nodata becomes ``void``."""
    from geoseg.classes import slugify

    by_name = {slugify(c.name): c.id for c in table}
    lut = np.full(256, void, dtype=np.uint16)
    missing = []
    for c in model:
        if slugify(c.name) in by_name:
            lut[c.id] = by_name[slugify(c.name)]
        else:
            missing.append(c.name)
    if missing:
        raise GeosegError(f"the model's classes {', '.join(missing)} are not {adapter} classes "
                          f"({', '.join(table.names)})")
    return lut


ADAPTER = register(VOC())
