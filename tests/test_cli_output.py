"""What the CLI prints: quiet by default (no Dask log lines, no library warnings), bars that reach their total."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.conftest import structured_scene, write_scene
from tests.test_vectorize import write_classes

ROOT = Path(__file__).resolve().parents[1]


def geoseg(*args, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "default"}  # a user's warnings setting: geoseg must still be quiet
    return subprocess.run([sys.executable, "-m", "geoseg", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300, cwd=cwd)


def test_local_cluster_run_is_quiet_without_v_and_talks_with_it(linear_bundle, tmp_path):
    write_scene(tmp_path / "a.tif", structured_scene(300, 300), crs=None)  # no CRS: rasterio warns about it
    args = ["predict", linear_bundle, tmp_path / "a.tif", "-o", tmp_path / "out", "--scheduler", "local",
            "--workers", "2", "--allow-no-crs", "--no-progress", "--chunk-size", "128"]
    r = geoseg(*args)
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip() == "1 scene predicted", r.stderr
    loud = geoseg("-v", *args, "--overwrite")
    assert loud.returncode == 0
    assert "Scheduler" in loud.stderr  # Dask's own lines come back with -v


def test_progress_bars_reach_their_total(linear_bundle, tmp_path):
    write_scene(tmp_path / "a.tif", structured_scene(300, 300))
    r = geoseg("predict", linear_bundle, tmp_path / "a.tif", "-o", tmp_path / "out", "--chunk-size", "128",
               "--tile-size", "128", "--overlap", "32")
    assert r.returncode == 0, r.stderr
    counts = re.findall(r"(\d+)/(\d+) \[", r.stderr)
    assert counts and counts[-1][0] == counts[-1][1] == "9", r.stderr[-500:]  # 3 x 3 tiles of 96 px steps
    arr = np.zeros((100, 100), np.uint8)
    arr[10:20, 10:20] = 1
    write_classes(tmp_path / "c.tif", arr)
    v = geoseg("vectorize", tmp_path / "c.tif", "-o", tmp_path / "c.gpkg")
    assert v.returncode == 0, v.stderr
    counts = re.findall(r"(\d+)/(\d+) \[", v.stderr)
    assert counts and counts[-1][0] == counts[-1][1] == "1", v.stderr  # the bar stays, at 1/1


def test_make_install_is_skipped_when_nothing_changed(tmp_path):
    """`make demo` and `make test` reinstall (and recompile the kernels) only when their inputs changed."""
    copy = tmp_path / "repo"
    (copy / "geoseg").mkdir(parents=True)
    for name in ("Makefile", "pyproject.toml", "setup.py"):
        shutil.copy(ROOT / name, copy / name)
    for p in (ROOT / "geoseg").glob("*/*.pyx"):  # each kernel beside its caller
        (copy / "geoseg" / p.parent.name).mkdir(exist_ok=True)
        shutil.copy(p, copy / "geoseg" / p.parent.name / p.name)
    (copy / "build").mkdir()
    stamp = copy / "build" / ".installed"
    stamp.write_text(shutil.which(sys.executable) or sys.executable)
    os.utime(stamp, (os.path.getmtime(stamp) + 10,) * 2)
    # PIP=false: any install attempt fails the command
    make = ["make", "-s", "-C", str(copy), "install", "PIP=false", f"PYTHON={sys.executable}"]
    r = subprocess.run(make, capture_output=True, text=True)
    assert r.returncode == 0 and "up to date" in r.stdout, r.stdout + r.stderr
    pyx = next((copy / "geoseg").glob("*/*.pyx"))
    os.utime(pyx, (os.path.getmtime(stamp) + 10,) * 2)
    r = subprocess.run(make, capture_output=True, text=True)
    assert r.returncode != 0  # a changed kernel source is rebuilt (here: the stand-in pip fails)
