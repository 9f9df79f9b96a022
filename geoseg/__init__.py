"""geoseg: tiled, blended, Dask-scheduled segmentation of large GeoTIFFs.

The Python API mirrors the command line::

    import geoseg

    outs = geoseg.predict("buildings-rgb", ["scenes/"], "out/")          # list of SceneOutputs
    geoseg.vectorize(outs[0].classes, "out/a.gpkg")
    report = geoseg.evaluate(outs[0].classes, "labels.gpkg", "audit/",
                             geoseg.EvaluateOptions(reference_class="building"))
    geoseg.train("configs/train/my.yaml", "models/my-model")
    geoseg.cluster(["scenes/"], "clusters/", geoseg.ClusterOptions(k=6))   # k-means class rasters
    bundle = geoseg.load_bundle("buildings-rgb")                        # .meta, .model (torch)
    geoseg.benchmarks.evaluate("voc", "preds/", "reports/voc/", root="VOCdevkit/VOC2012", split="val")

The commands are plain functions here; each imports its stage on first call
(:mod:`geoseg.prediction`, :mod:`geoseg.vector`, :mod:`geoseg.evaluation`, :mod:`geoseg.training`),
and the other names load on first use, so ``import geoseg`` stays light (no torch).
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geoseg.errors import GeosegError
from geoseg.version import __version__

if TYPE_CHECKING:  # for readers and type checkers; at run time these load on first use
    from geoseg.clustering import ClusterOptions
    from geoseg.evaluation.evaluate import EvaluateOptions
    from geoseg.prediction import PredictOptions, SceneOutputs
    from geoseg.training.config import TrainConfig
    from geoseg.vector.vectorize import VectorizeOptions


def predict(bundle: str | os.PathLike, inputs: list[str] | str, out_dir: str | os.PathLike,
            options: PredictOptions | None = None, client: object | None = None,
            checkpoint: str | os.PathLike | None = None, resources: dict | None = None) -> list[SceneOutputs]:
    """Predict every scene of ``inputs`` (files, folders or globs) into ``out_dir`` (``geoseg predict``).

    ``bundle``: a packaged model's name or a bundle folder. Returns one :class:`SceneOutputs` per
    scene (those skipped because their outputs exist included). See :func:`geoseg.prediction.predict`.
    """
    from geoseg.prediction import predict as run

    return run(bundle, inputs, out_dir, options, client=client, checkpoint=checkpoint, resources=resources)


def vectorize(raster: str | os.PathLike, output: str | os.PathLike, options: VectorizeOptions | None = None,
              client: object | None = None, classes: Any = None) -> Path:
    """A class raster to a styled GeoPackage, one layer per class (``geoseg vectorize``).

    See :func:`geoseg.vector.vectorize.vectorize`.
    """
    from geoseg.vector.vectorize import vectorize as run

    return run(raster, output, options, client=client, classes=classes)


def evaluate(prediction: str | os.PathLike, reference: str | os.PathLike, output: str | os.PathLike,
             options: EvaluateOptions | None = None, client: object | None = None) -> dict:
    """Score predictions against reference rasters or vectors and write the reports (``geoseg evaluate``).

    Returns the report (the content of ``report.json``). See :func:`geoseg.evaluation.evaluate.evaluate`.
    """
    from geoseg.evaluation.evaluate import evaluate as run

    return run(prediction, reference, output, options, client=client)


def train(config: str | os.PathLike | TrainConfig, output: str | os.PathLike, *, resume: bool = False,
          overwrite: bool = False, progress: bool = True, stop_after: int | None = None) -> Path:
    """Train a bundle from a config file into ``output`` (``geoseg train``); returns the bundle path.

    See :func:`geoseg.training.loop.train`.
    """
    from geoseg.training.loop import train as run

    return run(config, output, resume=resume, overwrite=overwrite, progress=progress, stop_after=stop_after)


def cluster(inputs: list[str] | str, out_dir: str | os.PathLike, options: ClusterOptions | None = None,
            client: object | None = None) -> list:
    """Unsupervised class rasters (k-means on the bands) or SLIC superpixel polygons
    (``ClusterOptions(method="slic")``) for every scene of ``inputs`` (``geoseg cluster``).

    Returns one :class:`geoseg.clustering.ClusterOutputs` per scene. See :func:`geoseg.clustering.cluster`.
    """
    from geoseg.clustering import cluster as run

    return run(inputs, out_dir, options, client=client)


_SUBPACKAGES = ("benchmarks", "workflows")  # geoseg.benchmarks.get("voc").evaluate(...), geoseg.workflows.run_workflow
_NAMES = {
    "PredictOptions": "geoseg.prediction", "SceneOutputs": "geoseg.prediction",
    "VectorizeOptions": "geoseg.vector.vectorize", "EvaluateOptions": "geoseg.evaluation.evaluate",
    "ClusterOptions": "geoseg.clustering",
    "load_config": "geoseg.training.config",
    "load_bundle": "geoseg.models.bundle", "read_meta": "geoseg.models.bundle", "init_bundle": "geoseg.models.bundle",
    "check_fit": "geoseg.inference.fit", "load_classes": "geoseg.classes", "ClassList": "geoseg.classes",
    "packaged_models": "geoseg.data",
    "load_workflow": "geoseg.workflows", "run_workflow": "geoseg.workflows",
}


def __getattr__(name: str):
    if name in _SUBPACKAGES:
        return importlib.import_module(f"geoseg.{name}")
    if name in _NAMES:
        value = getattr(importlib.import_module(_NAMES[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'geoseg' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_SUBPACKAGES, *_NAMES})


__all__ = ["GeosegError", "__version__", "predict", "vectorize", "evaluate", "train", "cluster", *_SUBPACKAGES,
           *_NAMES]
