"""The committed default bundle loads, and reproduces the held-out IoU the README reports."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import geoseg.data
from geoseg.bundle import load_bundle
from geoseg.evaluate import EvaluateOptions, evaluate
from geoseg.predict import PredictOptions, predict

ROOT = Path(__file__).resolve().parents[1]


def readme_iou() -> float:
    m = re.search(r"its building IoU is \*\*([0-9.]+)\*\*", (ROOT / "README.md").read_text())
    assert m, "README.md does not state the default model's held-out building IoU"
    return float(m.group(1))


def test_default_bundle_loads_small_and_without_pickle():
    b = load_bundle(geoseg.data.DEFAULT_MODEL)
    assert b.meta.architecture == "unet" and b.meta.bands == (1,)
    assert [c.name for c in b.meta.classes] == ["background", "building"]
    size = sum(f.stat().st_size for f in geoseg.data.DEFAULT_MODEL.iterdir())
    assert size <= 20 * 1024 * 1024
    assert not list(geoseg.data.DEFAULT_MODEL.glob("*.pt*"))


def test_held_out_iou_matches_the_readme(tmp_path):
    (out,) = predict(geoseg.data.DEFAULT_MODEL, [str(geoseg.data.ATLANTA_IMAGE)], tmp_path / "pred",
                     PredictOptions(progress=False))
    rep = evaluate(out.classes, geoseg.data.ATLANTA_LABELS, tmp_path / "audit",
                   EvaluateOptions(reference_class="building", aoi=str(ROOT / "configs/train/atlanta_holdout.geojson"),
                                   progress=False, audit=False))
    building = next(c for c in rep["classes"] if c["name"] == "building")
    assert building["iou"] == pytest.approx(readme_iou(), abs=0.01)
    # the AOI really is the held-out third: 300 x 900 pixels of 0.25 m²
    assert sum(map(sum, rep["confusion_m2"])) == pytest.approx(300 * 900 * 0.25)
