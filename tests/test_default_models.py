"""The packaged bundles load, and their predictions on held-out data reproduce the README's figures.

Each figure goes through the same tiled ``predict`` + ``evaluate`` path as ``make demo``.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio

import geoseg.data
from geoseg.evaluation.evaluate import EvaluateOptions, evaluate
from geoseg.models.bundle import load_bundle
from geoseg.prediction import PredictOptions, predict

ROOT = Path(__file__).resolve().parents[1]
CLASSES = str(ROOT / "configs" / "classes" / "buildings.yaml")


def readme_figures(model: str, data: str) -> tuple[float, float]:
    """``(building IoU, object F1)`` from the README's packaged-models table row for ``model`` on ``data``."""
    pattern = rf"\| `{re.escape(model)}` \|[^\n]*\| {re.escape(data)} \| \*\*([0-9.]+)\*\* \| ([0-9.]+)[^|\n]*\|"
    m = re.search(pattern, (ROOT / "README.md").read_text())
    assert m, f"README.md states no figures for {model} on {data}"
    return float(m.group(1)), float(m.group(2))


def scores(report: dict) -> tuple[float, float]:
    b = next(c for c in report["classes"] if c["name"] == "building")
    return b["iou"], report["objects"]["building"]["f1"]


@pytest.mark.parametrize("name,bands,dtype", [("buildings-rgb", (1, 2, 3), "uint8"),
                                              ("atlanta-buildings", (1,), "uint16")])
def test_packaged_bundles_load_small_pretrained_and_without_pickle(name, bands, dtype):
    b = load_bundle(name)
    assert b.meta.architecture == "unet" and b.meta.bands == bands and b.meta.extra["input"]["dtype"] == dtype
    assert [c.name for c in b.meta.classes] == ["background", "building"]
    assert b.meta.extra["encoder_weights"]["source"] == "efficientnet-lite0-imagenet"
    assert b.meta.extra["test"]["iou"]["building"] > 0  # scored on its test blocks when it was trained
    path = geoseg.data.packaged_models()[name]
    assert sum(f.stat().st_size for f in path.iterdir()) <= 20 * 1024 * 1024
    assert not list(path.glob("*.pt*"))


def test_buildings_rgb_on_the_held_out_rio_crop(tmp_path):
    (out,) = predict("buildings-rgb", [str(geoseg.data.RIO_IMAGE)], tmp_path / "pred", PredictOptions(progress=False))
    rep = evaluate(out.classes, geoseg.data.RIO_LABELS, tmp_path / "audit",
                   EvaluateOptions(reference_class="building", progress=False, audit=False))
    iou, f1 = scores(rep)
    want_iou, want_f1 = readme_figures("buildings-rgb", "held-out Rio crop (the demo)")
    assert iou == pytest.approx(want_iou, abs=0.01) and f1 == pytest.approx(want_f1, abs=0.01)


TEST_CHIPS = tuple(f"3band_013022223130_Public_img{n}.tif" for n in range(50, 55))


def test_buildings_rgb_on_the_rio_test_chips(shared_data, tmp_path):
    """An independent test from another part of the city: the SpaceNet chips img50-54 with building masks,
    which neither training nor threshold tuning reads (the config trains on img57/63/64, tunes on img55/56)."""
    from geoseg.training import load_config

    cfg = load_config(ROOT / "configs" / "train" / "rio_buildings.yaml")
    read = {Path(s.image).name for s in (*cfg.scenes, *cfg.validation.scenes)}
    assert read and not read & set(TEST_CHIPS)
    src = shared_data / "spacenet_buildings_exploration"
    (tmp_path / "chips").mkdir()
    (tmp_path / "ref").mkdir()
    for img in (src / "3band" / name for name in TEST_CHIPS):
        with rasterio.open(img) as s:
            pixels, profile = s.read(), s.profile
        with rasterio.open(src / "building_mask_vis" / img.name) as m:
            mask = m.read(1, masked=False)  # the masks declare nodata=0: read them unmasked
        ref = (mask > 0).astype(np.uint8)
        ref[(pixels == 0).all(0)] = 255  # off-scene pixels (0 in every band) are not scored
        profile.update(count=1, dtype="uint8", nodata=255)
        with rasterio.open(tmp_path / "ref" / img.name, "w", **profile) as dst:
            dst.write(ref, 1)
        shutil.copy(img, tmp_path / "chips" / img.name)
    predict("buildings-rgb", [str(tmp_path / "chips")], tmp_path / "pred", PredictOptions(progress=False))
    rep = evaluate(tmp_path / "pred", tmp_path / "ref", tmp_path / "audit",
                   EvaluateOptions(classes=CLASSES, progress=False, audit=False))
    assert len(rep["scenes"]) == 5
    from scipy import ndimage

    n_ref = 0  # reference buildings: 8-connected components of more than 20 px (the SpaceNet scorer's rule)
    for p in sorted((tmp_path / "ref").glob("*.tif")):
        lab, n = ndimage.label(rasterio.open(p).read(1) == 1, structure=np.ones((3, 3)))
        n_ref += int((np.bincount(lab.ravel(), minlength=n + 1)[1:] > 20).sum())
    assert sum(rep["objects"]["building"][k] for k in ("tp", "fn")) == n_ref  # every reference building counted
    iou, f1 = scores(rep)
    want_iou, want_f1 = readme_figures("buildings-rgb", "5 Rio test chips (img50-54), another part of the city")
    assert iou == pytest.approx(want_iou, abs=0.01) and f1 == pytest.approx(want_f1, abs=0.01)


def test_buildings_rgb_on_its_own_training_blocks(shared_data, tmp_path):
    """How far the Rio labels can be fitted at all: the README's figure for the pixels the model trained on."""
    scene = shared_data / "spacenet-utilities" / "AOI_0_TEST_3band_Small_mask.tif"
    (out,) = predict("buildings-rgb", [str(scene)], tmp_path / "pred", PredictOptions(progress=False))
    rep = evaluate(out.classes, scene.with_name("AOI_0_TEST_BuildingLabels.geojson"), tmp_path / "audit",
                   EvaluateOptions(reference_class="building", progress=False, audit=False,
                                   aoi=str(ROOT / "configs/train/rio_training_blocks.geojson")))
    with rasterio.open(scene) as s:
        held_out = 3 * 700 * 700 + 700 * (s.width - 4 * 700)  # blocks [1,1], [2,1], [3,0] and the narrow [0,4]
        assert s.width * s.height - held_out == sum(map(sum, rep["confusion_px"]))
    m = re.search(r"on its own training blocks[^*]*\*\*([0-9.]+)\*\* \(object F1 ([0-9.]+)[;)]",
                  (ROOT / "README.md").read_text())
    assert m, "README.md states no training-block figure for buildings-rgb"
    iou, f1 = scores(rep)
    assert iou == pytest.approx(float(m.group(1)), abs=0.01) and f1 == pytest.approx(float(m.group(2)), abs=0.01)


def test_atlanta_buildings_on_its_held_out_third(tmp_path):
    (out,) = predict("atlanta-buildings", [str(geoseg.data.ATLANTA_IMAGE)], tmp_path / "pred",
                     PredictOptions(progress=False))
    rep = evaluate(out.classes, geoseg.data.ATLANTA_LABELS, tmp_path / "audit",
                   EvaluateOptions(reference_class="building", aoi=str(ROOT / "configs/train/atlanta_holdout.geojson"),
                                   progress=False, audit=False))
    assert sum(map(sum, rep["confusion_m2"])) == pytest.approx(300 * 900 * 0.25)  # the right third
    iou, f1 = scores(rep)
    want_iou, want_f1 = readme_figures("atlanta-buildings", "held-out right third of the Atlanta chip")
    assert iou == pytest.approx(want_iou, abs=0.01) and f1 == pytest.approx(want_f1, abs=0.01)
