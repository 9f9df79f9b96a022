"""The vectorize output opens styled in real QGIS (Debian's python3-qgis, headless)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from geoseg.vectorize import VectorizeOptions, vectorize
from tests.test_vectorize import blobs, write_classes

QGIS_PYTHON = "/usr/bin/python3"


def have_pyqgis() -> bool:
    if not os.path.exists(QGIS_PYTHON):
        return False
    r = subprocess.run([QGIS_PYTHON, "-c", "import qgis.core"], capture_output=True,
                       env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    return r.returncode == 0


@pytest.mark.skipif(not have_pyqgis() and not os.environ.get("CI"),
                    reason="PyQGIS not installed (bash .ci/system-deps.sh installs it; CI always runs this)")
def test_gpkg_opens_styled_in_qgis_and_renders(tmp_path):
    arr = blobs(300, 400, seed=4)
    path = write_classes(tmp_path / "scene.classes.tif", arr)
    gpkg = vectorize(path, tmp_path / "scene.gpkg", VectorizeOptions(chunk_size=128, progress=False))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["QT_QPA_PLATFORM"] = "offscreen"
    png = tmp_path / "map.png"
    r = subprocess.run([QGIS_PYTHON, str(Path(__file__).with_name("qgis_check.py")), str(gpkg), "EPSG:32616",
                        "building=#e31a1c", "road=#7f7f7f", "water=#1f78b4", "--png", str(png)],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count('"valid": true') == 3
    assert png.stat().st_size > 1000
    assert np.any(arr == 1)
