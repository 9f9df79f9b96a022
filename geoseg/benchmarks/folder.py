"""The mmsegmentation folder layout (LoveDA, ISPRS Potsdam/Vaihingen, users' own chip sets).

``ROOT/img_dir/SPLIT`` and ``ROOT/ann_dir/SPLIT`` (or ``img_dir/`` and ``ann_dir/`` directly when no
split is given); annotations are PNGs of class ids, 255 = ignore; predictions are named like the
annotations. ``reduce_zero_label`` recodes the reference as mmsegmentation does: 0 becomes ignore
and every other value moves down by one (predictions stay in the model's coding).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from geoseg.benchmarks.registry import register
from geoseg.benchmarks.semantic import Pair, check_missing, identity_coding, publish, score_pairs, semantic_report
from geoseg.benchmarks.voc import match_classes, require
from geoseg.classes import ClassList, load_classes
from geoseg.errors import GeosegError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")


class Folder:
    name = "folder"
    kind = "semantic"
    summary = "mmsegmentation folder layout with a class-list YAML (LoveDA, Potsdam, Vaihingen, own chips)"
    layout = "ROOT/img_dir[/SPLIT]/*, ROOT/ann_dir[/SPLIT]/*.png (class ids, 255 ignore); --classes YAML"
    conventions = ("--reduce-zero-label recodes the reference only (0 ignored, others minus 1), as mmsegmentation; "
                   "a predicted 255 is a miss; absent classes NaN, left out of means")

    def classes(self, root=None, classes=None) -> ClassList:
        if classes is None:
            raise GeosegError("the folder adapter needs --classes (a class-list YAML)")
        return classes if isinstance(classes, ClassList) else load_classes(classes)

    def _dir(self, root, kind: str, split: str | None) -> Path:
        base = require(Path(root) / kind, "mmsegmentation-layout")
        return require(base / split, f"{kind}") if split else base

    def images(self, root, split: str | None = None) -> list[tuple[str, Path]]:
        folder = self._dir(root, "img_dir", split)
        return sorted((p.stem, p) for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)

    def pairs(self, predictions, root, split: str | None) -> list[Pair]:
        anns = sorted(self._dir(root, "ann_dir", split).glob("*.png"))
        if not anns:
            raise GeosegError("no annotation PNGs", self._dir(root, "ann_dir", split))
        preds = Path(predictions)
        if not preds.is_dir():
            raise GeosegError("predictions must be a folder of PNGs named like the annotations", preds)
        return [Pair(a.stem, str(preds / a.name) if (preds / a.name).exists() else None, str(a)) for a in anns]

    def evaluate(self, predictions, output, root, classes=None, split: str | None = None,
                 reduce_zero_label: bool = False, allow_missing: bool = False, overwrite: bool = False,
                 threads: int | None = None) -> dict:
        table = self.classes(root, classes)
        pairs = check_missing(self.pairs(predictions, root, split), allow_missing, str(predictions))
        coding = identity_coding(table, reduce_zero_label=reduce_zero_label)
        results = score_pairs(pairs, coding, threads=threads)
        report = semantic_report(results, coding, self.name, {"root": str(root), "split": split,
                                                              "reduce_zero_label": reduce_zero_label})
        publish(report, results, coding.classes, output, overwrite)
        return report

    def write_prediction(self, labels: np.ndarray, folder: Path, name: str, classes: ClassList,
                         table: ClassList | None = None) -> Path:
        from geoseg.benchmarks.images import write_png

        lut = match_classes(classes, table or classes, self.name)
        path = folder / f"{name}.png"
        write_png(path, lut[labels])
        return path


ADAPTER = register(Folder())
