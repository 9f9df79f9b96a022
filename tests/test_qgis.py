"""The vectorize output opens styled in real QGIS (Debian's python3-qgis, headless)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from geoseg.vector.vectorize import VectorizeOptions, vectorize
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


def run_layers_check(*args) -> list[dict]:
    import json

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["QT_QPA_PLATFORM"] = "offscreen"
    r = subprocess.run([QGIS_PYTHON, str(Path(__file__).with_name("qgis_layers_check.py")), *map(str, args)],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]


@pytest.mark.skipif(not have_pyqgis() and not os.environ.get("CI"),
                    reason="PyQGIS not installed (bash .ci/system-deps.sh installs it; CI always runs this)")
def test_class_raster_legend_in_qgis_lists_the_class_names_only(linear_bundle, tmp_path):
    from geoseg.prediction import PredictOptions, predict
    from tests.conftest import structured_scene, write_scene

    write_scene(tmp_path / "a.tif", structured_scene(64, 64))
    (out,) = predict(linear_bundle, [str(tmp_path / "a.tif")], tmp_path / "out", PredictOptions(progress=False))
    (info,) = run_layers_check("--raster", out.classes)
    assert info["renderer"] == "paletted"
    assert info["legend"] == ["background", "building", "water"]
    assert [(c["label"], c["color"], c["alpha"]) for c in info["classes"]] == [
        ("background", "#000000", 0), ("building", "#e31a1c", 255), ("water", "#1f78b4", 255)]


@pytest.mark.skipif(not have_pyqgis() and not os.environ.get("CI"),
                    reason="PyQGIS not installed (bash .ci/system-deps.sh installs it; CI always runs this)")
def test_iou_grid_leaves_cells_with_nothing_to_score_unfilled_and_fills_the_rest_half_transparent(tmp_path):
    from geoseg.evaluation.evaluate import EvaluateOptions, evaluate

    ref = np.zeros((256, 256), np.uint8)
    ref[10:50, 10:50] = 1          # cell (0, 0): a building, found exactly -> IoU 1
    pred = ref.copy()
    pred[140:180, 10:50] = 1       # cell (1, 0): a false positive only -> IoU 0
    # cells (0, 1) and (1, 1): background only -> nothing to score
    write_classes(tmp_path / "p.tif", pred)
    write_classes(tmp_path / "r.tif", ref)
    evaluate(tmp_path / "p.tif", tmp_path / "r.tif", tmp_path / "rep",
             EvaluateOptions(progress=False, grid_size=128))
    (grid,) = run_layers_check("--grid", tmp_path / "rep" / "audit.gpkg", "--png", tmp_path / "grid.png")
    assert grid["renderer"] == "RuleRenderer"
    by_iou = {c["mean_iou"]: c["rgb"] for c in grid["cells"]}
    assert set(by_iou) == {None, 0.0, 1.0}
    assert by_iou[None] == [255, 255, 255]            # no fill: the white background shows
    r, g, b = by_iou[0.0]
    assert r > g and r > b and (r, g, b) != (215, 25, 28) and g > 100  # red, blended half with white
    r, g, b = by_iou[1.0]
    assert g > r and g > b and (r, g, b) != (26, 150, 65)


@pytest.mark.skipif(not have_pyqgis() and not os.environ.get("CI"),
                    reason="PyQGIS not installed (bash .ci/system-deps.sh installs it; CI always runs this)")
def test_instances_gpkg_opens_styled_by_class_in_qgis(tmp_path):
    from geoseg.models.bundle import init_bundle
    from geoseg.prediction import PredictOptions, predict
    from tests.conftest import write_scene
    from tests.test_instances import oracle_scene

    bundle = init_bundle("components", tmp_path / "oracle", encoder="none", bands=(1,), classes="building",
                         tile_size=128, overlap=32)
    scene = write_scene(tmp_path / "s.tif", oracle_scene(300, 400, blobs=25)[None], nodata=None)
    out = predict(bundle, [str(scene)], tmp_path / "out", PredictOptions(progress=False))[0]
    (layer,) = run_layers_check("--instances", out.instances_gpkg, "--png", tmp_path / "map.png")
    assert layer["renderer"] == "categorizedSymbol" and layer["field"] == "class_name"
    assert [(c["value"], c["label"], c["color"]) for c in layer["categories"]] == [("building", "building", "#e31a1c")]
    assert len(layer["features"]) > 10
    for f in layer["features"]:  # every instance is drawn in its class colour (half transparent over white)
        r, g, b = f["rgb"]
        assert r > g + 40 and r > b + 40, f
