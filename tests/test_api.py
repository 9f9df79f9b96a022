"""The Python API a notebook uses: ``import geoseg`` is light, and its commands are callable whatever was imported."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import rasterio

from tests.conftest import known_class, structured_scene, write_scene


def test_import_geoseg_does_not_load_torch():
    code = "import sys, geoseg; assert 'torch' not in sys.modules; print(sorted(geoseg.__all__))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    names = eval(r.stdout)
    assert {"predict", "vectorize", "evaluate", "train", "load_bundle", "packaged_models", "workflows",
            "load_workflow", "run_workflow"} <= set(names)


def test_commands_are_callable_from_the_package(linear_bundle, tmp_path):
    import geoseg
    import geoseg.predict as predict_module  # binds geoseg.predict to the module: still callable

    assert geoseg.predict is predict_module
    data = structured_scene(64, 96)
    write_scene(tmp_path / "a.tif", data)
    (out,) = geoseg.predict(linear_bundle, [str(tmp_path / "a.tif")], tmp_path / "out",
                            geoseg.PredictOptions(progress=False))
    with rasterio.open(out.classes) as src:
        np.testing.assert_array_equal(src.read(1), known_class(data))
    gpkg = geoseg.vectorize(out.classes, tmp_path / "a.gpkg", geoseg.VectorizeOptions(progress=False))
    report = geoseg.evaluate(out.classes, out.classes, tmp_path / "rep",
                             geoseg.EvaluateOptions(progress=False, audit=False))
    assert gpkg.exists() and report["overall"]["pixel_accuracy"] == 1.0
    assert geoseg.load_bundle(linear_bundle).meta.architecture == "conv1x1"
