"""geoseg: tiled, blended, Dask-scheduled segmentation of large GeoTIFFs.

The Python API mirrors the command line::

    import geoseg

    outs = geoseg.predict("buildings-rgb", ["scenes/"], "out/")          # list of SceneOutputs
    geoseg.vectorize(outs[0].classes, "out/a.gpkg")
    report = geoseg.evaluate(outs[0].classes, "labels.gpkg", "audit/",
                             geoseg.EvaluateOptions(reference_class="building"))
    geoseg.train("configs/train/my.yaml", "models/my-model")
    bundle = geoseg.load_bundle("buildings-rgb")                        # .meta, .model (torch)
    geoseg.benchmarks.evaluate("voc", "preds/", "reports/voc/", root="VOCdevkit/VOC2012", split="val")

Names are imported on first use, so ``import geoseg`` stays light.
"""

from __future__ import annotations

import importlib
import sys
import types

__version__ = "0.1.0"

from geoseg.errors import GeosegError  # noqa: E402


class _CommandModule(types.ModuleType):
    """``geoseg.predict``, ``vectorize``, ``evaluate`` and ``train`` are modules that can be called.

    A submodule and a function of the same name cannot both be the package's
    attribute: importing ``geoseg.predict`` anywhere rebinds ``geoseg.predict``
    to the module. Calling the module calls its function of the same name, so
    ``geoseg.predict(...)`` works whichever was imported first.
    """

    def __call__(self, *args, **kwargs):
        return getattr(self, self.__name__.rsplit(".", 1)[1])(*args, **kwargs)


def _command_module(name: str) -> None:
    sys.modules[name].__class__ = _CommandModule


_COMMANDS = ("predict", "vectorize", "evaluate", "train")
_SUBPACKAGES = ("benchmarks", "workflows")  # geoseg.benchmarks.get("voc").evaluate(...), geoseg.workflows.run_workflow
_API = {
    "PredictOptions": "geoseg.predict", "VectorizeOptions": "geoseg.vectorize",
    "EvaluateOptions": "geoseg.evaluate", "load_config": "geoseg.train",
    "load_bundle": "geoseg.bundle", "read_meta": "geoseg.bundle", "init_bundle": "geoseg.bundle",
    "check_fit": "geoseg.fit", "load_classes": "geoseg.classes", "ClassList": "geoseg.classes",
    "packaged_models": "geoseg.data",
    "load_workflow": "geoseg.workflows", "run_workflow": "geoseg.workflows",
}


def __getattr__(name: str):
    if name in _COMMANDS or name in _SUBPACKAGES:
        return importlib.import_module(f"geoseg.{name}")
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'geoseg' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_COMMANDS, *_SUBPACKAGES, *_API])


__all__ = ["GeosegError", "__version__", *_COMMANDS, *_SUBPACKAGES, *_API]
