"""What a new user trips over: mismatched inputs, silent reruns, legends, headline numbers, file modes."""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
import yaml
from click.testing import CliRunner
from PIL import Image

import geoseg.data
from geoseg.classes import load_classes
from geoseg.cli.main import cli
from geoseg.errors import GeosegError
from geoseg.evaluation.evaluate import EvaluateOptions, evaluate
from geoseg.prediction import PredictOptions, predict
from tests.conftest import assert_one_line_error, structured_scene, write_scene
from tests.test_train import scene_with_buildings, write_config
from tests.test_vectorize import write_classes


def run_cli(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


# -- 1. input that does not fit the model ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def rgba_4326(tmp_path_factory):
    """An 8-bit RGBA image at about 0.3 m in EPSG:4326: nothing like the panchromatic model's 16-bit 0.5 m input."""
    path = tmp_path_factory.mktemp("fit") / "rgba.tif"
    data = np.concatenate([structured_scene(256, 256, 3, seed=5), np.full((1, 256, 256), 255, np.uint8)])
    t = rasterio.transform.from_origin(-84.39, 33.75, 2.7e-6, 2.7e-6)  # ~0.3 m at 33.7°N
    return write_scene(path, data, crs="EPSG:4326", nodata=None, transform=t)


def test_a_scene_that_does_not_fit_the_model_is_warned_about_once(rgba_4326, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="geoseg"):
        predict(geoseg.data.PAN_MODEL, [str(rgba_4326)], tmp_path / "out", PredictOptions(progress=False))
    lines = [r.getMessage() for r in caplog.records if "does not fit the model" in r.getMessage()]
    assert len(lines) == 1, lines
    msg = lines[0]
    assert "rgba.tif" in msg and "has 4 bands" in msg and "is uint8; the model was trained on uint16" in msg
    assert "m pixels; the model was trained at 0.50 m" in msg


def test_values_far_from_the_training_statistics_are_named(tmp_path):
    from geoseg.inference.fit import check_fit
    from geoseg.io.raster import inspect_scene
    from geoseg.models.bundle import read_meta

    rng = np.random.default_rng(0)
    bright = rng.normal(3000, 100, (1, 200, 200)).astype(np.uint16)  # 16-bit, 0.5 m, but 9 std above the mean
    path = write_scene(tmp_path / "bright.tif", bright, nodata=None)
    (msg,) = check_fit(inspect_scene(path), read_meta(geoseg.data.PAN_MODEL))
    assert msg.startswith("band 1 has mean 30") and "the model was trained on mean 4" in msg
    water = np.full((1, 200, 200), 450, np.uint16)  # uniform: a narrow spread alone is no mismatch
    assert check_fit(inspect_scene(write_scene(tmp_path / "flat.tif", water, nodata=None)),
                     read_meta(geoseg.data.PAN_MODEL)) == []


def test_strict_turns_the_mismatch_into_an_error(rgba_4326, tmp_path):
    r = run_cli("predict", "atlanta-buildings", rgba_4326, "-o", tmp_path / "out", "--strict", "--no-progress")
    assert_one_line_error(r, "rgba.tif", "does not fit the model", "has 4 bands")
    assert not (tmp_path / "out").exists()


def test_a_scene_that_fits_gives_no_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="geoseg"):
        predict(geoseg.data.PAN_MODEL, [str(geoseg.data.ATLANTA_IMAGE)], tmp_path / "out",
                PredictOptions(progress=False))
    assert not [r for r in caplog.records if "does not fit" in r.getMessage()]


# -- 2, 4. training defaults: every band, and a run with nothing held out says so -------------------------------

def test_training_without_bands_uses_every_band_and_says_so(tmp_path, caplog):
    scene, _, _ = scene_with_buildings(tmp_path)
    with rasterio.open(scene) as src:
        three = np.concatenate([src.read()] * 3)
    write_scene(scene, three, crs="EPSG:32616", transform=src.transform, nodata=0)
    cfg = yaml.safe_load(open(write_config(tmp_path, train={"epochs": 1})))
    del cfg["bands"]
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(cfg))
    from geoseg.training import train

    with caplog.at_level(logging.WARNING, logger="geoseg"):
        out = train(tmp_path / "train.yaml", tmp_path / "model", progress=False)
    meta = json.loads((out / "geoseg.json").read_text())
    assert meta["bands"] == [1, 2, 3] and meta["extra"]["input"]["dtype"] == "uint8"
    assert any("bands not given: training on all 3 bands of scene.tif" in r.getMessage() for r in caplog.records)


def test_a_run_with_nothing_held_out_warns_and_keeps_the_last_epoch(tmp_path, caplog):
    scene_with_buildings(tmp_path)
    cfg = write_config(tmp_path, validation={"block_size": 64, "holdout": [], "fraction": 0}, train={"epochs": 2})
    from geoseg.training import train

    with caplog.at_level(logging.WARNING, logger="geoseg"):
        out = train(cfg, tmp_path / "model", progress=False)
    msgs = [r.getMessage() for r in caplog.records]
    assert any("nothing is held out for validation" in m for m in msgs)
    assert not any("validation mIoU nan" in m for m in msgs)
    assert json.loads((out / "geoseg.json").read_text())["extra"]["validation"]["epoch"] == 2


# -- 3. a rerun says what it skipped ---------------------------------------------------------------------------

def test_a_rerun_prints_what_it_skipped_and_counts_it(linear_bundle, tmp_path):
    write_scene(tmp_path / "a.tif", structured_scene(64, 64))
    first = run_cli("predict", linear_bundle, tmp_path / "a.tif", "-o", tmp_path / "out", "--no-progress")
    assert first.exit_code == 0 and "1 scene predicted" in first.stderr
    again = run_cli("predict", linear_bundle, tmp_path / "a.tif", "-o", tmp_path / "out", "--no-progress")
    assert again.exit_code == 0
    assert "skipped a.tif (output exists; --overwrite to replace)" in again.stdout
    assert "0 scenes predicted, 1 skipped" in again.stderr


# -- 5. the class raster's legend: QML beside it, category names for GDAL --------------------------------------

def test_class_raster_has_a_qgis_style_and_gdal_category_names(linear_bundle, tmp_path):
    write_scene(tmp_path / "a.tif", structured_scene(64, 64))
    (out,) = predict(linear_bundle, [str(tmp_path / "a.tif")], tmp_path / "out", PredictOptions(progress=False))
    qml = (tmp_path / "out" / "a.classes.qml").read_text()
    assert qml.count("<paletteEntry") == 3 and 'label="building"' in qml
    assert 'value="0" color="#000000" alpha="0" label="background"' in qml  # background transparent
    info = subprocess.run(["gdalinfo", str(out.classes)], capture_output=True, text=True, check=True).stdout
    cats = info[info.index("Categories:"):].splitlines()[1:4]
    assert [c.strip() for c in cats] == ["0: background", "1: building", "2: water"]


# -- 7. the headline leads with the foreground ----------------------------------------------------------------

def test_headline_leads_with_foreground_classes(tmp_path):
    ref = np.zeros((200, 200), np.uint8)
    ref[50:100, 50:100] = 1
    pred = np.zeros_like(ref)
    pred[60:110, 50:100] = 1
    write_classes(tmp_path / "p.tif", pred)
    write_classes(tmp_path / "r.tif", ref)
    rep = evaluate(tmp_path / "p.tif", tmp_path / "r.tif", tmp_path / "rep",
                   EvaluateOptions(progress=False, audit=False, object_classes=("building",)))
    iou = 40 * 50 / (60 * 50)
    o = rep["overall"]
    assert o["mean_iou_foreground"] == pytest.approx(iou)  # building is the only foreground class present
    assert o["mean_iou_area_foreground"] == pytest.approx(iou)
    assert o["fw_iou"] > 0.9 and o["mean_iou_area"] > 0.9  # what used to lead: dominated by background
    md = (tmp_path / "rep" / "report.md").read_text()
    lead = md.split("\n\n")[2]
    assert lead.startswith(f"**Foreground mean IoU {iou:.3f}") and "building IoU 0.667" in lead
    assert md.index("Foreground mean IoU") < md.index("Background, shown apart") < md.index("| pixel accuracy")


# -- 9. files geoseg writes respect the umask ------------------------------------------------------------------

def test_bundle_and_checkpoint_files_follow_the_umask(tmp_path):
    scene_with_buildings(tmp_path)
    from geoseg.training import train

    old = os.umask(0o022)
    try:
        out = train(write_config(tmp_path, train={"epochs": 1}), tmp_path / "model", progress=False)
    finally:
        os.umask(old)
    for p in [out, *out.rglob("*")]:
        mode = stat.S_IMODE(p.stat().st_mode)
        assert mode == (0o755 if p.is_dir() else 0o644), (p, oct(mode))


# -- 10. chips without georeferencing ------------------------------------------------------------------------

def test_png_chips_predict_and_score_with_allow_no_crs(linear_bundle, tmp_path):
    chips = tmp_path / "chips"
    chips.mkdir()
    data = structured_scene(96, 128, 3, seed=2)
    Image.fromarray(np.moveaxis(data, 0, -1)).save(chips / "c1.png")
    refused = run_cli("predict", linear_bundle, chips, "-o", tmp_path / "out", "--no-progress")
    assert_one_line_error(refused, "folder holds no GeoTIFF", "--allow-no-crs")
    r = run_cli("predict", linear_bundle, chips, "-o", tmp_path / "out", "--no-progress", "--allow-no-crs",
                "--vectorize")
    assert r.exit_code == 0, r.output
    with rasterio.open(tmp_path / "out" / "c1.classes.tif") as src:
        pred = src.read(1)
        assert src.crs is None and src.shape == (96, 128)
    from tests.conftest import known_class

    np.testing.assert_array_equal(pred, known_class(data))
    # the polygons sit where QGIS shows the image: column c, row r at (c, -r)
    layers = gpd.read_file(tmp_path / "out" / "c1.gpkg", layer="building")
    mask = rasterio.features.rasterize(
        [(shapely.affinity.scale(g, 1, -1, origin=(0, 0)), 1) for g in layers.geometry], out_shape=pred.shape)
    np.testing.assert_array_equal(mask == 1, pred == 1)
    # a reference mask PNG scores against it; pixel grids must match
    ref = pred.copy()
    ref[:10] = 0
    Image.fromarray(ref).save(tmp_path / "ref.png")
    classes = tmp_path / "classes.yaml"
    classes.write_text("classes: [background, building, water]\n")
    rep = evaluate(tmp_path / "out" / "c1.classes.tif", tmp_path / "ref.png", tmp_path / "rep",
                   EvaluateOptions(classes=str(classes), allow_no_crs=True, progress=False, audit=False))
    from geoseg.evaluation.metrics import confusion

    np.testing.assert_array_equal(np.asarray(rep["confusion_px"]), confusion(ref, pred, 3, np.ones_like(ref, bool)))
    Image.fromarray(ref[:50]).save(tmp_path / "small.png")
    with pytest.raises(GeosegError, match="pixel grids must match exactly"):
        evaluate(tmp_path / "out" / "c1.classes.tif", tmp_path / "small.png", tmp_path / "rep2",
                 EvaluateOptions(classes=str(classes), allow_no_crs=True, progress=False, audit=False))


# -- 11. vector against vector --------------------------------------------------------------------------------

def test_vector_prediction_against_vector_reference(tmp_path):
    ref = [shapely.box(0, 0, 10, 10), shapely.box(20, 0, 30, 10), shapely.box(40, 0, 50, 10)]
    pred = [shapely.box(0, 0, 10, 10), shapely.box(22, 0, 32, 10)]  # one exact, one shifted, one missed
    crs = "EPSG:32616"
    gpd.GeoDataFrame({"class_id": [1, 1]}, geometry=pred, crs=crs).to_file(tmp_path / "p.gpkg", layer="building")
    gpd.GeoDataFrame({"kind": ["building"] * 3}, geometry=ref, crs=crs).to_file(tmp_path / "r.gpkg")
    classes = tmp_path / "classes.yaml"
    classes.write_text("classes: [background, building]\n")
    with pytest.raises(GeosegError, match="pass --resolution"):
        evaluate(tmp_path / "p.gpkg", tmp_path / "r.gpkg", tmp_path / "x",
                 EvaluateOptions(classes=str(classes), class_field="kind", progress=False, audit=False))
    rep = evaluate(tmp_path / "p.gpkg", tmp_path / "r.gpkg", tmp_path / "rep",
                   EvaluateOptions(classes=str(classes), class_field="kind", resolution=0.5, progress=False,
                                   audit=False))
    b = rep["classes"][1]
    inter, union = 100 + 80, 300 + 200 - 180
    assert b["iou"] == pytest.approx(inter / union)
    assert b["tp_px"] == 180 * 4
    assert rep["objects"]["building"]["tp"] == 2 and rep["objects"]["building"]["fn"] == 1  # 0.667 ≥ 0.5


# -- 12, 13, 14. messages and plain class lists ------------------------------------------------------------------

def test_class_field_values_that_match_nothing_are_named(tmp_path):
    ref = np.zeros((50, 50), np.uint8)
    write_classes(tmp_path / "p.tif", ref)
    gpd.GeoDataFrame({"height": [3.5 + i for i in range(77)]},
                     geometry=[shapely.box(733600 + i, 3725180, 733601 + i, 3725181) for i in range(77)],
                     crs="EPSG:32616").to_file(tmp_path / "r.gpkg")
    r = run_cli("evaluate", tmp_path / "p.tif", tmp_path / "r.gpkg", "-o", tmp_path / "rep", "--class-field",
                "height", "--no-progress")
    err = assert_one_line_error(r, "r.gpkg", "no value of field 'height' maps to a class", "3.5, 4.5",
                                "and 71 more", "1 building")
    assert len(err) < 400


def test_class_lists_as_plain_names(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("classes: [background, building, road]\n")
    c = load_classes(p)
    assert [(x.id, x.name, x.vectorize) for x in c] == [(0, "background", False), (1, "building", True),
                                                        (2, "road", True)]
    assert c.by_id(1).color == "#e31a1c"
    p.write_text("[background, water]\n")
    assert load_classes(p).names == ["background", "water"]
    p.write_text("classes:\n  - {id: one, name: building}\n")
    with pytest.raises(GeosegError, match=r"classes\[0\] \(building\): id must be an integer, got 'one'"):
        load_classes(p)


def test_evaluate_prints_the_headline_and_where_reports_are(tmp_path):
    ref = np.zeros((64, 64), np.uint8)
    ref[10:30, 10:30] = 1
    write_classes(tmp_path / "p.tif", ref)
    write_classes(tmp_path / "r.tif", ref)
    r = run_cli("evaluate", tmp_path / "p.tif", tmp_path / "r.tif", "-o", tmp_path / "rep", "--no-progress")
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("Foreground mean IoU 1.000")
    assert f"report: {tmp_path / 'rep' / 'report.html'}" in r.stdout
    assert f"audit layers: {tmp_path / 'rep' / 'audit.gpkg'}" in r.stdout


# -- 20. model info and list -------------------------------------------------------------------------------------

def test_model_info_is_readable_and_json_on_request():
    r = run_cli("model", "info", "atlanta-buildings")
    assert r.exit_code == 0, r.output
    assert "architecture  unet" in r.stdout and "bands [1], uint16, GSD 0.50 m" in r.stdout
    assert "classes       0 background, 1 building" in r.stdout and "test (held out) IoU" in r.stdout
    j = run_cli("model", "info", "atlanta-buildings", "--json")
    assert json.loads(j.stdout)["format"] == "geoseg-bundle"


def test_model_list_and_unknown_names():
    r = run_cli("model", "list")
    assert r.exit_code == 0
    names = [line.split()[0] for line in r.stdout.splitlines()]
    assert names == sorted(geoseg.data.packaged_models()) and "buildings-rgb" in names
    bad = run_cli("predict", "buildings-rgbb", str(geoseg.data.RIO_IMAGE), "-o", "/nonexistent/out")
    assert_one_line_error(bad, "buildings-rgbb", "no packaged model of this name", "atlanta-buildings, buildings-rgb")
