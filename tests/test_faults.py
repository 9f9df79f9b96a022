"""Faults and bad input: no silent wrong output, no hangs, one line for each problem."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

from geoseg.cli.main import cli
from geoseg.predict import PredictOptions, predict
from tests.conftest import assert_one_line_error, known_class, structured_scene, write_scene
from tests.test_vectorize import write_classes


def run_cli(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_nan_pixels_are_nodata_whether_declared_or_not(linear_bundle, tmp_path):
    data = structured_scene(128, 160).astype(np.float32)
    data[:, 10:30, 20:60] = np.nan          # NaN in every band: nodata
    data[0, 70:80, 100:120] = np.nan        # NaN in one band only: still a pixel, its NaN band counts as 0
    for nodata in (None, -9999.0):
        path = write_scene(tmp_path / f"f{nodata}.tif", data, nodata=nodata)
        (out,) = predict(linear_bundle, [str(path)], tmp_path / f"out{nodata}", PredictOptions(progress=False))
        with rasterio.open(out.classes) as src:
            got = src.read(1)
        assert (got[10:30, 20:60] == 255).all()
        expected = known_class(np.nan_to_num(data, nan=0.0))
        keep = np.ones(got.shape, bool)
        keep[10:30, 20:60] = False
        np.testing.assert_array_equal(got[keep], expected[keep])


@pytest.mark.parametrize("option,value", [("--tile-size", "0"), ("--tile-size", "-64"), ("--chunk-size", "0"),
                                          ("--overlap", "-1"), ("--workers", "0"), ("--batch-size", "0")])
def test_zero_and_negative_predict_options_are_refused(linear_bundle, tmp_path, option, value):
    write_scene(tmp_path / "a.tif", structured_scene(64, 64))
    r = run_cli("predict", linear_bundle, tmp_path / "a.tif", "-o", tmp_path / "out", option, value)
    assert_one_line_error(r, option, value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["vectorize", "evaluate"])
@pytest.mark.parametrize("value", ["0", "-5"])
def test_chunk_size_zero_is_refused_by_vectorize_and_evaluate_instead_of_hanging(tmp_path, command, value):
    arr = np.zeros((64, 64), np.uint8)
    arr[5:20, 5:20] = 1
    write_classes(tmp_path / "c.tif", arr)
    args = ["-o", tmp_path / "c.gpkg"] if command == "vectorize" else [tmp_path / "c.tif", "-o", tmp_path / "rep"]
    r = run_cli(command, tmp_path / "c.tif", *args, "--chunk-size", value)
    assert_one_line_error(r, "--chunk-size must be positive", value)
    assert not (tmp_path / "c.gpkg").exists() and not (tmp_path / "rep").exists()


@pytest.mark.parametrize("aoi", ["missing.gpkg", "notes.gpkg", "points.geojson"])
def test_aoi_is_checked_before_any_work(tmp_path, aoi):
    arr = np.zeros((64, 64), np.uint8)
    write_classes(tmp_path / "c.tif", arr)
    (tmp_path / "notes.gpkg").write_text("not a GeoPackage")
    (tmp_path / "points.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": {"type": "Point", "coordinates": [0, 0]}}]}))
    r = run_cli("evaluate", tmp_path / "c.tif", tmp_path / "c.tif", "-o", tmp_path / "rep", "--aoi", tmp_path / aoi)
    err = assert_one_line_error(r, aoi, "--aoi")
    assert {"missing.gpkg": "no such file", "notes.gpkg": "not a readable vector file",
            "points.geojson": "must hold polygons"}[aoi] in err
    assert not (tmp_path / "rep").exists()


def test_an_empty_feature_collection_says_no_features(tmp_path):
    write_classes(tmp_path / "c.tif", np.zeros((64, 64), np.uint8))
    (tmp_path / "empty.geojson").write_text('{"type": "FeatureCollection", "features": []}')
    r = run_cli("evaluate", tmp_path / "c.tif", tmp_path / "empty.geojson", "-o", tmp_path / "rep")
    assert_one_line_error(r, "empty.geojson", "the reference holds no features")


def test_outputs_written_into_the_input_folder_never_become_inputs(linear_bundle, tmp_path, caplog):
    folder = tmp_path / "same"
    folder.mkdir()
    write_scene(folder / "a.tif", structured_scene(64, 64))
    for _ in range(2):
        r = run_cli("predict", linear_bundle, folder, "-o", folder, "--no-progress", "--overwrite")
        assert r.exit_code == 0, r.output
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["a.classes.qml", "a.classes.tif", "a.classes.tif.aux.xml", "a.tif"], names
    assert any("output folder is also an input folder" in rec.getMessage() for rec in caplog.records)
