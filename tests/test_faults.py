"""Faults and bad input: no silent wrong output, no hangs, one line for each problem."""

from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

from geoseg.cli.main import cli
from geoseg.prediction import PredictOptions, predict
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


# -- kills and reruns: real processes, signals sent once temporaries exist ----------------------------------------

@contextlib.contextmanager
def sigint_default():
    """Children started here get Ctrl-C's default action, as in a terminal. A test suite started in the
    background of a shell without job control ignores SIGINT, its children inherit that, and Python keeps
    it ignored. (Not a ``preexec_fn``: Python code between fork and exec can deadlock a threaded parent.)"""
    import signal

    old = signal.getsignal(signal.SIGINT)
    if old == signal.SIG_IGN:  # a handler is reset to the default at exec; an ignored signal stays ignored
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def start_predict(bundle, scene, out, *extra):
    import subprocess
    import sys

    with sigint_default():
        return subprocess.Popen([sys.executable, "-m", "geoseg", "predict", str(bundle), str(scene), "-o", str(out),
                                 "--no-progress", "--chunk-size", "256", "--workers", "1", *extra],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_temporaries(proc, out, timeout=120.0):
    import time

    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if out.is_dir() and any(".geoseg-tmp-" in p.name for p in out.iterdir()):
            return
        assert proc.poll() is None, f"finished before its temporaries were seen: {proc.communicate()}"
        time.sleep(0.02)
    raise AssertionError("no temporaries appeared")


@pytest.fixture(scope="module")
def slow_scene(tmp_path_factory, unet_bundle):
    """A scene big enough that a 64 px U-Net takes seconds on it, and its output from an uninterrupted run."""
    folder = tmp_path_factory.mktemp("slow")
    scene = write_scene(folder / "big.tif", structured_scene(800, 800, seed=9))
    (out,) = predict(unet_bundle, [str(scene)], folder / "clean", PredictOptions(progress=False, chunk_size=256,
                                                                                  workers=1))
    return scene, out.classes.read_bytes()


@pytest.mark.parametrize("sig,code,line", [("SIGTERM", 143, "geoseg: terminated"),
                                           ("SIGINT", 130, "geoseg: interrupted")])
def test_sigterm_and_sigint_clean_up_and_say_one_line(unet_bundle, slow_scene, tmp_path, sig, code, line):
    import signal

    scene, clean = slow_scene
    proc = start_predict(unet_bundle, scene, tmp_path / "out")
    wait_for_temporaries(proc, tmp_path / "out")
    proc.send_signal(getattr(signal, sig))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert err.strip() == line, err
    # nothing half-written, no temporaries; the folder the run created is gone again
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
    again = start_predict(unet_bundle, scene, tmp_path / "out")
    assert again.wait(timeout=300) == 0
    assert (tmp_path / "out" / "big.classes.tif").read_bytes() == clean  # the rerun equals a clean run


def test_a_rerun_after_kill_9_removes_the_dead_runs_temporaries_and_matches_a_clean_run(unet_bundle, slow_scene,
                                                                                     tmp_path):
    scene, clean = slow_scene
    out = tmp_path / "out"
    proc = start_predict(unet_bundle, scene, out)
    wait_for_temporaries(proc, out)
    proc.kill()
    proc.wait()
    left = [p.name for p in out.iterdir()]
    assert left and all(".geoseg-tmp-" in n for n in left) and "big.classes.tif" not in left
    again = start_predict(unet_bundle, scene, out)
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["big.classes.qml", "big.classes.tif", "big.classes.tif.aux.xml"]
    assert (out / "big.classes.tif").read_bytes() == clean


def test_a_killed_evaluate_does_not_block_the_rerun(tmp_path):
    """A dead run's audit folder is a temporary, not content: the same command runs again without --overwrite."""
    import subprocess
    import sys

    arr = np.zeros((64, 64), np.uint8)
    arr[5:20, 5:20] = 1
    write_classes(tmp_path / "c.tif", arr)
    out = tmp_path / "rep"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a PID that no longer runs
    (out / f".audit.geoseg-tmp-{dead.pid}-abc123").mkdir()
    (out / f".audit.geoseg-tmp-{dead.pid}-abc123" / "audit.gpkg").write_bytes(b"half")
    r = run_cli("evaluate", tmp_path / "c.tif", tmp_path / "c.tif", "-o", out, "--no-progress")
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == ["audit.gpkg", "report.html", "report.json", "report.md"]


# -- full and read-only file systems (real mounts; skipped with the reason where mounting is not allowed) --------

@pytest.fixture()
def small_disk(tmp_path):
    """A 300 KiB tmpfs, mounted for the test and unmounted after it."""
    import subprocess

    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (root needed): {r.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def noise_scene(path, n=1500):
    return write_scene(path, np.random.default_rng(0).integers(1, 255, (3, n, n)).astype(np.uint8))


def test_predict_onto_a_full_disk_fails_with_one_line_and_leaves_nothing(linear_bundle, tmp_path, small_disk):
    scene = noise_scene(tmp_path / "noise.tif")
    r = run_cli("predict", linear_bundle, scene, "-o", small_disk / "out", "--no-progress")
    assert r.exit_code == 1
    err = [line for line in r.stderr.splitlines() if line.startswith("geoseg:")]
    assert len(err) == 1 and "noise.classes.tif: cannot write output" in err[0], r.stderr
    assert "Traceback" not in r.stderr
    assert not (small_disk / "out").exists() or not list((small_disk / "out").iterdir())
    # a rerun has nothing to skip: it writes a real output once there is room
    ok = run_cli("predict", linear_bundle, scene, "-o", tmp_path / "out", "--no-progress")
    assert ok.exit_code == 0 and "1 scene predicted" in ok.stderr


def test_a_full_disk_prints_geosegs_one_line_and_nothing_from_gdal_or_libtiff(linear_bundle, tmp_path, small_disk):
    """In a real process (libtiff and GDAL print to the C-level stderr from Dask's threads): one line only."""
    import subprocess
    import sys

    scene = noise_scene(tmp_path / "noise.tif")
    cmd = [sys.executable, "-m", "geoseg", "predict", str(linear_bundle), str(scene), "-o", str(small_disk / "out"),
           "--no-progress"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1
    assert r.stderr.splitlines() == [f"geoseg: error: {small_disk / 'out' / 'noise.classes.tif'}: cannot write output: "
                                     "no space left on the device (0 bytes free)"], r.stderr
    # with --debug the libraries' own lines are there again
    r = subprocess.run(cmd[:3] + ["--debug"] + cmd[3:], capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "No space left on device" in r.stderr


def test_both_gdal_builds_are_silenced_before_pyogrio_is_imported(tmp_path, small_disk):
    """pyogrio's GDAL is quieted through its extension's file, without importing pyogrio (which pulls in
    geopandas and pandas, ~90 MB before the first tile); a GeoPackage onto a full disk in a real process
    still prints geoseg's one line only."""
    import subprocess
    import sys

    probe = ("import sys; from geoseg.io import gdal_messages; n = gdal_messages.silence(); "
             "print(n, sorted(m for m in ('pyogrio', 'geopandas', 'pandas') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.split(None, 1) == ["2", "[]\n"], (r.stdout, r.stderr)
    rng = np.random.default_rng(0)
    write_classes(tmp_path / "c.tif", (rng.random((1500, 1500)) < 0.3).astype(np.uint8))
    r = subprocess.run([sys.executable, "-m", "geoseg", "vectorize", str(tmp_path / "c.tif"), "-o",
                        str(small_disk / "c.gpkg"), "--no-progress"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 1
    assert len(r.stderr.splitlines()) == 1 and "cannot write output" in r.stderr, r.stderr


@pytest.mark.parametrize("command", ["vectorize", "evaluate"])
def test_vectorize_and_evaluate_onto_a_full_disk_fail_with_one_line(tmp_path, small_disk, command):
    rng = np.random.default_rng(0)
    write_classes(tmp_path / "c.tif", (rng.random((1500, 1500)) < 0.3).astype(np.uint8))
    target = small_disk / ("c.gpkg" if command == "vectorize" else "rep")
    args = [tmp_path / "c.tif", "-o", target] if command == "vectorize" else [tmp_path / "c.tif", tmp_path / "c.tif",
                                                                           "-o", target]
    r = run_cli(command, *args, "--no-progress")
    assert r.exit_code == 1
    err = [line for line in r.stderr.splitlines() if line.startswith("geoseg:")]
    assert len(err) == 1 and "cannot write output" in err[0] and "Traceback" not in r.stderr, r.stderr
    assert not list(small_disk.iterdir())


def test_vectorize_onto_a_read_only_file_system_is_one_line(tmp_path, small_disk):
    import subprocess

    write_classes(tmp_path / "c.tif", np.ones((64, 64), np.uint8))
    r = subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot remount read-only here: {r.stderr.strip()}")
    res = run_cli("vectorize", tmp_path / "c.tif", "-o", small_disk / "c.gpkg", "--no-progress")
    assert_one_line_error(res, str(small_disk), "not writable (Read-only file system)")


def test_a_raster_reference_in_another_crs_scores_objects_end_to_end(tmp_path):
    """A reference in EPSG:4326 against a UTM prediction, with a building class (objects are scored too)."""
    from rasterio.warp import Resampling, calculate_default_transform, reproject

    from geoseg.evaluation.evaluate import EvaluateOptions, evaluate

    pred = np.zeros((600, 700), np.uint8)
    for i in range(6):
        pred[40 + i * 90: 100 + i * 90, 50 + i * 100: 130 + i * 100] = 1
    write_classes(tmp_path / "p.tif", pred)
    with rasterio.open(tmp_path / "p.tif") as src:
        t, w, h = calculate_default_transform(src.crs, "EPSG:4326", src.width, src.height, *src.bounds)
        ref = np.full((h, w), 255, np.uint8)
        reproject(pred, ref, src_transform=src.transform, src_crs=src.crs, dst_transform=t, dst_crs="EPSG:4326",
                  resampling=Resampling.nearest, src_nodata=255, dst_nodata=255)
    write_classes(tmp_path / "r.tif", ref, crs="EPSG:4326", transform=t)
    rep = evaluate(tmp_path / "p.tif", tmp_path / "r.tif", tmp_path / "rep", EvaluateOptions(progress=False))
    b = rep["classes"][1]
    assert b["iou"] > 0.95  # two nearest-neighbour resamplings apart
    assert rep["objects"]["building"]["tp"] == 6 and rep["objects"]["building"]["fp"] == 0


def test_gdal_says_the_real_problem_in_one_line(linear_bundle, tmp_path):
    import os

    cut = write_scene(tmp_path / "cut.tif", structured_scene(600, 600), tiled=True)
    with open(cut, "r+b") as f:
        f.truncate(os.path.getsize(cut) // 2)
    err = assert_one_line_error(run_cli("predict", linear_bundle, cut, "-o", tmp_path / "o"), "cut.tif")
    assert "See previous exception" not in err and ("Read error" in err or "TIFF" in err)
    vrt = tmp_path / "missing.vrt"
    vrt.write_text('<VRTDataset rasterXSize="100" rasterYSize="100"><SRS>EPSG:32616</SRS>'
                   '<GeoTransform>0,1,0,100,0,-1</GeoTransform><VRTRasterBand dataType="Byte" band="1">'
                   f'<SimpleSource><SourceFilename relativeToVRT="0">{tmp_path / "gone.tif"}</SourceFilename>'
                   '<SourceBand>1</SourceBand></SimpleSource></VRTRasterBand></VRTDataset>')
    vrt_err = assert_one_line_error(run_cli("predict", linear_bundle, vrt, "-o", tmp_path / "o"), "missing.vrt")
    assert "gone.tif" in vrt_err and "See previous exception" not in vrt_err
    nocrs = write_scene(tmp_path / "nocrs.tif", structured_scene(64, 64), crs=None)
    r = run_cli("predict", linear_bundle, nocrs, "-o", tmp_path / "o")
    assert_one_line_error(r, "nocrs.tif", "has no CRS")  # and no NotGeoreferencedWarning lines before it


@pytest.mark.parametrize("sig,code,line", [("SIGTERM", 143, "geoseg: terminated"),
                                           ("SIGINT", 130, "geoseg: interrupted")])
def test_an_interrupted_run_exits_even_if_a_thread_never_finishes(unet_bundle, slow_scene, tmp_path, sig, code,
                                                                  line):
    """A signal lands at an arbitrary point: a pool thread can be left inside a task or on a lock the
    main thread held, and the interpreter's exit would wait for it forever. Once the work has unwound
    and the line is said, geoseg leaves anyway. The stuck thread is made here on purpose."""
    import signal
    import subprocess
    import sys

    scene, _ = slow_scene
    out = tmp_path / "out"
    stuck = ("import sys, threading; threading.Thread(target=threading.Event().wait, name='stuck').start(); "
             "sys.argv[0] = 'geoseg'; from geoseg.cli.main import main; main()")
    with sigint_default():
        proc = subprocess.Popen([sys.executable, "-c", stuck, "predict", str(unet_bundle), str(scene), "-o", str(out),
                                 "--no-progress", "--chunk-size", "256", "--workers", "1"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_temporaries(proc, out)
        proc.send_signal(getattr(signal, sig))
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == code, err
    assert err.strip() == line, err
    assert not out.exists() or not list(out.iterdir())


def test_ctrl_c_under_a_local_cluster_is_one_line(unet_bundle, slow_scene, tmp_path):
    """Ctrl-C reaches the whole process group: geoseg and its Dask worker processes."""
    import os
    import signal
    import subprocess
    import sys

    scene, _ = slow_scene
    out = tmp_path / "out"
    with sigint_default():
        proc = subprocess.Popen([sys.executable, "-m", "geoseg", "predict", str(unet_bundle), str(scene), "-o",
                                 str(out), "--no-progress", "--chunk-size", "256", "--scheduler", "local", "--workers",
                                 "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    wait_for_temporaries(proc, out)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert err.strip() == "geoseg: interrupted", err
    assert not out.exists() or not [p for p in out.iterdir()]


def test_vectorize_removes_a_dead_runs_partial_geopackage(tmp_path):
    import subprocess
    import sys

    write_classes(tmp_path / "c.tif", np.ones((64, 64), np.uint8))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".c.gpkg.geoseg-tmp-{dead.pid}-1.partial.gpkg"
    stale.write_bytes(b"x" * 1000)
    live = tmp_path / f".c.gpkg.geoseg-tmp-{__import__('os').getppid()}-1.partial.gpkg"  # a live process's
    live.write_bytes(b"y")
    r = run_cli("vectorize", tmp_path / "c.tif", "-o", tmp_path / "c.gpkg", "--no-progress")
    assert r.exit_code == 0, r.output
    assert not stale.exists() and live.exists()
