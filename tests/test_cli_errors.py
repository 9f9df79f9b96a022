"""Every bad input gets one line naming the file and the problem, exit 1, and no output."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
from click.testing import CliRunner

from geoseg.cli.main import cli
from geoseg.io.output import output_dir
from tests.conftest import assert_one_line_error, structured_scene, write_scene


def run_cli(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture()
def scene(tmp_path):
    return write_scene(tmp_path / "ok.tif", structured_scene(96, 96))


def assert_no_output(out):
    """A refused input leaves nothing, not even the (empty) output folder it created."""
    assert not out.exists(), sorted(os.listdir(out))


def test_output_dir_removes_only_the_empty_folders_it_created(tmp_path):
    (tmp_path / "kept").mkdir()
    with pytest.raises(RuntimeError), output_dir(tmp_path / "kept" / "a" / "b"):
        raise RuntimeError
    assert sorted(os.listdir(tmp_path)) == ["kept"] and not any((tmp_path / "kept").iterdir())
    with pytest.raises(RuntimeError), output_dir(tmp_path / "kept" / "a" / "b") as out:
        (out / "done.tif").write_bytes(b"finished work stays")
        raise RuntimeError
    assert (tmp_path / "kept" / "a" / "b" / "done.tif").read_bytes() == b"finished work stays"


def test_missing_path(linear_bundle, tmp_path):
    r = run_cli("predict", linear_bundle, tmp_path / "nope.tif", "-o", tmp_path / "out")
    assert_one_line_error(r, "nope.tif", "no such file")
    assert not (tmp_path / "out").exists()


def test_not_a_raster(linear_bundle, tmp_path):
    bad = tmp_path / "notes.tif"
    bad.write_text("these are not pixels\n")
    r = run_cli("predict", linear_bundle, bad, "-o", tmp_path / "out")
    assert_one_line_error(r, "notes.tif", "not a readable raster")
    assert not (tmp_path / "out").exists()


def test_truncated_geotiff(linear_bundle, tmp_path):
    path = write_scene(tmp_path / "cut.tif", structured_scene(600, 600), tiled=True)
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size // 2)
    r = run_cli("predict", linear_bundle, path, "-o", tmp_path / "out")
    assert_one_line_error(r, "cut.tif")
    assert_no_output(tmp_path / "out")


def test_too_few_bands(linear_bundle, tmp_path):
    path = write_scene(tmp_path / "pan.tif", structured_scene(64, 64, bands=1))
    r = run_cli("predict", linear_bundle, path, "-o", tmp_path / "out")
    assert_one_line_error(r, "pan.tif", "has 1 band but the model needs bands 1,2,3")


def test_no_crs_is_refused_unless_allowed(linear_bundle, tmp_path):
    path = write_scene(tmp_path / "nocrs.tif", structured_scene(64, 64), crs=None)
    r = run_cli("predict", linear_bundle, path, "-o", tmp_path / "out")
    assert_one_line_error(r, "nocrs.tif", "has no CRS", "--allow-no-crs")
    assert_no_output(tmp_path / "out")
    r = run_cli("predict", linear_bundle, path, "-o", tmp_path / "out", "--allow-no-crs", "--no-progress")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "out" / "nocrs.classes.tif").exists()


def test_empty_folder(linear_bundle, tmp_path):
    (tmp_path / "scenes").mkdir()
    r = run_cli("predict", linear_bundle, tmp_path / "scenes", "-o", tmp_path / "out")
    assert_one_line_error(r, "scenes", "folder holds no GeoTIFF")


def test_unwritable_output_directory(linear_bundle, scene, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = run_cli("predict", linear_bundle, scene, "-o", blocker / "out")
    assert_one_line_error(r, "out", "output directory is not writable")
    if os.geteuid() != 0:  # root ignores permission bits
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        r = run_cli("predict", linear_bundle, scene, "-o", ro)
        assert_one_line_error(r, "ro", "not writable")


def test_bundle_with_missing_or_mismatched_weights(tmp_path, scene):
    r = run_cli("model", "init", "unet", "--encoder", "resnet18", "--tile-size", "64", "--overlap", "16",
                "-o", tmp_path / "b")
    assert r.exit_code == 0, r.output
    w = tmp_path / "b" / "model.safetensors"
    data = w.read_bytes()
    w.unlink()
    r = run_cli("predict", tmp_path / "b", scene, "-o", tmp_path / "out")
    assert_one_line_error(r, "bundle has no weights")
    assert_no_output(tmp_path / "out")
    w.write_bytes(data)
    meta = (tmp_path / "b" / "geoseg.json").read_text().replace('"resnet18"', '"resnet34"')
    (tmp_path / "b" / "geoseg.json").write_text(meta)
    r = run_cli("predict", tmp_path / "b", scene, "-o", tmp_path / "out")
    assert_one_line_error(r, "model.safetensors", "weights do not match geoseg.json")
    assert_no_output(tmp_path / "out")


def test_pickle_checkpoint(tmp_path, scene):
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(pickle.dumps({"state": np.zeros(3)}))
    r = run_cli("predict", ckpt, scene, "-o", tmp_path / "out")
    assert_one_line_error(r, "model.pt", "pickle checkpoint")


def test_unknown_scheduler_and_overlap(linear_bundle, scene, tmp_path):
    r = run_cli("predict", linear_bundle, scene, "-o", tmp_path / "out", "--scheduler", "thread")
    assert_one_line_error(r, "unknown scheduler 'thread'")
    r = run_cli("predict", linear_bundle, scene, "-o", tmp_path / "out", "--overlap", "100")
    assert_one_line_error(r, "overlap must be between 0 and half the tile size (64)")


def test_debug_shows_the_traceback(linear_bundle, tmp_path):
    r = run_cli("predict", linear_bundle, tmp_path / "nope.tif", "-o", tmp_path / "out", "--debug")
    assert r.exit_code == 1
    assert "Traceback" in r.stderr and "nope.tif: no such file" in r.stderr


def test_evaluate_two_vector_files_says_what_the_prediction_must_be(tmp_path):
    from geoseg.data import RIO_LABELS

    res = CliRunner().invoke(cli, ["evaluate", str(RIO_LABELS), str(RIO_LABELS), "-o", str(tmp_path / "o")])
    assert_one_line_error(res, "the prediction must be a class raster (NAME.classes.tif) or a GeoPackage geoseg wrote",
                          str(RIO_LABELS))
    assert not (tmp_path / "o").exists()


def test_semicolons_and_exclamation_marks_in_scene_names(tmp_path):
    """pyogrio and GDAL parse paths as URIs and cut file names at ';' and '!': geoseg's outputs are still
    written (under plain temporary names) and read back (through links)."""
    import shutil

    from geoseg.data import RIO_IMAGE, RIO_LABELS

    scene = tmp_path / "in" / "a;b!c.tif"
    scene.parent.mkdir()
    shutil.copy(RIO_IMAGE, scene)
    out = tmp_path / "o;x"
    res = CliRunner().invoke(cli, ["predict", "buildings-rgb", str(scene), "-o", str(out), "--panoptic",
                                   "--no-progress", "--vectorize"])
    assert res.exit_code == 0, res.output
    names = sorted(p.name for p in out.iterdir())
    assert "a;b!c.instances.gpkg" in names and "a;b!c.panoptic.gpkg" in names and "a;b!c.gpkg" in names
    assert not [n for n in names if n.startswith(".") or n in ("a", "a;b")]
    res = CliRunner().invoke(cli, ["evaluate", str(out / "a;b!c.panoptic.tif"), str(RIO_LABELS), "-o",
                                   str(tmp_path / "e"), "--panoptic", "--reference-class", "building",
                                   "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "panoptic Things: PQ" in res.output and (tmp_path / "e" / "audit.gpkg").exists()
