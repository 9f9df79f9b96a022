"""``geoseg benchmark predict``: a geoseg bundle over a benchmark's images, written in the benchmark's format.

The images go through the same tiling and blending engine as ``geoseg predict`` (images without
georeferencing are fine here); each class raster is then recoded into the benchmark's labels by
class name (VOC palette PNGs; Cityscapes labelIds from a model's 19 classes; folder-layout PNGs).
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np

from geoseg.benchmarks.registry import get
from geoseg.errors import GeosegError

log = logging.getLogger("geoseg")


def predict(adapter: str, bundle, output, root, split: str | None = None, classes=None, options=None) -> list[Path]:
    """Predict every image of the benchmark split into ``output``; returns the files written."""
    import rasterio

    from geoseg.benchmarks.voc import match_classes
    from geoseg.io.output import output_dir, tmp_folder
    from geoseg.models.bundle import read_meta, resolve_bundle
    from geoseg.prediction import PredictOptions, output_paths
    from geoseg.prediction import predict as run

    ad = get(adapter)
    if not hasattr(ad, "write_prediction"):
        raise GeosegError(f"benchmark predict writes semantic predictions; {ad.name} is scored from "
                          "instance results (see geoseg predict --coco-results)")
    kwargs = {"split": split} if split else {}
    images = ad.images(root, **kwargs)
    if not images:
        raise GeosegError("no images to predict", root)
    bundle = resolve_bundle(bundle)
    meta = read_meta(bundle)
    table = ad.classes(root, classes) if ad.name == "folder" else ad.classes(root)
    match_classes(meta.classes, table, ad.name)  # a model that cannot write this benchmark fails before predicting
    options = replace(options or PredictOptions(), allow_no_crs=True, overwrite=True, probabilities=False)
    written = []
    with output_dir(output) as out:
        work = tmp_folder(out, "predict")
        try:
            run(bundle, [str(p) for _, p in images], work, options)
            for name, path in images:
                with rasterio.open(output_paths(work, path, False).classes) as src:
                    labels = src.read(1)
                extra = {"table": table} if ad.name == "folder" else {}
                written.append(ad.write_prediction(labels.astype(np.intp), out, name, meta.classes, **extra))
        finally:
            shutil.rmtree(work, ignore_errors=True)
    log.info("%s: %d predictions", output, len(written))
    return written


__all__ = ["predict"]
