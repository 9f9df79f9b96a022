"""Benchmark adapters: read, predict, score and export public benchmarks with the official conventions.

One registry (``get``, ``names``), one module per benchmark::

    from geoseg import benchmarks

    voc = benchmarks.get("voc")
    report = voc.evaluate("preds/", "reports/voc/", root="VOCdevkit/VOC2012", split="val")
    benchmarks.evaluate("coco", "results.json", "reports/coco/", annotations="instances_val2017.json")

Semantic adapters score through ``geoseg.evaluation.metrics`` and write ``geoseg evaluate``'s report files;
COCO scores come from pycocotools' COCOeval (or faster-coco-eval, checked equal in the tests).
"""

from __future__ import annotations

from geoseg.benchmarks import (  # noqa: F401  (registration)
    cityscapes,
    cityscapes_instances,
    cityscapes_panoptic,
    coco,
    coco_panoptic,
    folder,
    voc,
)
from geoseg.benchmarks.registry import get, names


def evaluate(adapter: str, predictions, output, **options) -> dict:
    """``geoseg benchmark evaluate ADAPTER PREDICTIONS -o OUTPUT``: score and write the reports."""
    return get(adapter).evaluate(predictions, output, **options)


__all__ = ["get", "names", "evaluate"]
