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


def predict(adapter: str, bundle, output, root, split: str | None = None, classes=None, options=None,
            annotations=None) -> list[Path]:
    """Predict every image of the benchmark split into ``output``; returns the files written."""
    import rasterio

    from geoseg.benchmarks.voc import match_classes
    from geoseg.io.output import output_dir, tmp_folder
    from geoseg.models.bundle import read_meta, resolve_bundle
    from geoseg.prediction import PredictOptions, output_paths
    from geoseg.prediction import predict as run

    ad = get(adapter)
    if getattr(ad, "kind", None) == "panoptic":
        return predict_panoptic(ad, bundle, output, root, split, annotations, options)
    if annotations is not None:
        raise GeosegError(f"--annotations does not apply to benchmark predict {ad.name}")
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


def predict_panoptic(ad, bundle, output, root, split, annotations, options) -> list[Path]:
    """A panoptic benchmark's images through ``geoseg predict --panoptic`` (or ``--instances``), written as a
    COCO panoptic results JSON (``OUTPUT/panoptic.json`` beside ``OUTPUT/panoptic/``). The model's classes are
    matched to the benchmark's categories by name; pixels of classes without a category are VOID; a thing
    class matched to a stuff category gives one segment for all its pixels."""
    import json

    import rasterio

    from geoseg.benchmarks.coco_panoptic import raster_to_segments, write_panoptic
    from geoseg.classes import NODATA, ClassList, slugify
    from geoseg.io.output import output_dir, tmp_folder
    from geoseg.models.bundle import read_meta, resolve_bundle
    from geoseg.prediction import PredictOptions, output_paths
    from geoseg.prediction import predict as run

    images, categories = ad.prediction_targets(root, split=split, annotations=annotations)
    if not images:
        raise GeosegError("no images to predict", root)
    bundle = resolve_bundle(bundle)
    options = options or PredictOptions()
    if options.instances is None and read_meta(bundle).objects is None:
        raise GeosegError(f"benchmark predict {ad.name} needs a bundle with object channels, or --instances "
                          "BUNDLE for the things", bundle)
    options = replace(options, allow_no_crs=True, overwrite=True, probabilities=False,
                      panoptic=options.instances is None)
    by_slug = {slugify(str(c.get("name", c["id"]))): c for c in categories}
    things = np.zeros(256, bool)
    for c in categories:
        if not 0 <= int(c["id"]) < NODATA:
            raise GeosegError(f"category id {c['id']} is outside 0..254, which panoptic rasters hold", annotations)
        things[int(c["id"])] = bool(c.get("isthing", 0))
    written, entries = [], []
    with output_dir(output) as out:
        work = tmp_folder(out, "predict")
        try:
            run(bundle, [str(p) for _, _, p in images], work, options)
            lut = None
            for image_id, name, path in images:
                pan_path = output_paths(work, path, False, panoptic=True).panoptic
                with rasterio.open(pan_path) as src:
                    pan = src.read()
                    if lut is None:
                        classes = ClassList.from_dict({"classes": json.loads(src.tags()["GEOSEG_CLASSES"])})
                        lut = np.full(NODATA + 1, NODATA, np.int64)
                        for c in classes:
                            if c.slug in by_slug:
                                lut[c.id] = int(by_slug[c.slug]["id"])
                        if (lut[:NODATA] == NODATA).all():
                            raise GeosegError(f"no class of the model ({', '.join(classes.names)}) is a category "
                                              f"of {ad.name}", bundle)
                cls = lut[np.minimum(pan[0], NODATA)]
                ids, info = raster_to_segments(cls, pan[1], things, reference=False)
                entries.append(({"id": image_id, "file_name": f"{name}.png"}, ids, info))
            write_panoptic(out / "panoptic", out / "panoptic.json", entries, categories)
            written = [out / "panoptic.json"]
        finally:
            shutil.rmtree(work, ignore_errors=True)
    log.info("%s: %d panoptic predictions", output, len(entries))
    return written


__all__ = ["predict", "predict_panoptic"]
