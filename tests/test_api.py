"""The Python API a notebook uses: every name of ``geoseg.__all__``, called the way the README documents it.

``import geoseg`` is light (no torch); the four commands are plain functions; the README's Python
example runs as written, on the embedded held-out Rio crop, and its numbers are checked against a
rasterization of the footprints done here with rasterio.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import re
import subprocess
import sys
import types

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from rasterio.features import rasterize

import geoseg
from tests.conftest import ROOT, known_class, structured_scene, write_scene

# Which test covers each public name; test_every_public_name_is_covered keeps this equal to __all__.
COVERED = {
    "predict": "test_readme_python_example", "vectorize": "test_readme_python_example",
    "evaluate": "test_readme_python_example", "PredictOptions": "test_readme_python_example",
    "VectorizeOptions": "test_readme_python_example", "EvaluateOptions": "test_readme_python_example",
    "SceneOutputs": "test_readme_python_example",
    "train": "test_train_and_load_config", "load_config": "test_train_and_load_config",
    "load_bundle": "test_bundles_and_classes", "read_meta": "test_bundles_and_classes",
    "init_bundle": "test_bundles_and_classes", "packaged_models": "test_bundles_and_classes",
    "load_classes": "test_bundles_and_classes", "ClassList": "test_bundles_and_classes",
    "check_fit": "test_check_fit",
    "cluster": "test_cluster_from_the_package", "ClusterOptions": "test_cluster_from_the_package",
    "benchmarks": "test_benchmarks_from_the_package",
    "workflows": "test_workflows_from_the_package", "load_workflow": "test_workflows_from_the_package",
    "run_workflow": "test_workflows_from_the_package",
    "GeosegError": "test_errors_and_version", "__version__": "test_errors_and_version",
}


def test_every_public_name_is_covered():
    assert sorted(geoseg.__all__) == sorted(COVERED)
    tests = {name for name, obj in globals().items() if name.startswith("test_") and callable(obj)}
    assert set(COVERED.values()) <= tests
    assert sorted(dir(geoseg)) == sorted(set(dir(geoseg)))  # __dir__ lists each name once
    assert set(geoseg.__all__) <= set(dir(geoseg))


def test_import_geoseg_does_not_load_torch():
    code = "import sys, geoseg; assert 'torch' not in sys.modules, 'torch'; print(sorted(geoseg.__all__))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert eval(r.stdout) == sorted(geoseg.__all__)


def test_the_commands_are_plain_functions():
    """No module masquerades as a function: ``geoseg.predict`` is a function whatever was imported."""
    import geoseg.inference.semantic  # noqa: F401
    import geoseg.prediction  # noqa: F401
    import geoseg.training  # noqa: F401
    import geoseg.vector.vectorize  # noqa: F401

    for name in ("predict", "vectorize", "evaluate", "train"):
        fn = getattr(geoseg, name)
        assert isinstance(fn, types.FunctionType), name
        assert fn.__module__ == "geoseg" and fn.__doc__
    # the API's signatures are those of the functions they call
    from geoseg.evaluation.evaluate import evaluate
    from geoseg.prediction import predict
    from geoseg.training.loop import train
    from geoseg.vector.vectorize import vectorize

    for api, impl in ((geoseg.predict, predict), (geoseg.vectorize, vectorize), (geoseg.evaluate, evaluate),
                      (geoseg.train, train)):
        a, b = inspect.signature(api).parameters, inspect.signature(impl).parameters
        assert [(p.name, p.kind, p.default) for p in a.values()] == [(p.name, p.kind, p.default) for p in b.values()]


def _readme_block(heading: str) -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split(heading, 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_python_example(tmp_path, monkeypatch, capsys):
    """The README's example, as written, on the embedded held-out scene."""
    code = _readme_block("## Python API")
    assert "geoseg.predict(" in code and "geoseg.evaluate(" in code
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    exec(compile(code, "README.md", "exec"), ns)
    outs, gpkg, report = ns["outs"], ns["gpkg"], ns["report"]
    printed = float(capsys.readouterr().out.strip().splitlines()[-1])

    (out,) = outs
    assert isinstance(out, geoseg.SceneOutputs) and not out.skipped
    from geoseg.data import RIO_IMAGE, RIO_LABELS

    with rasterio.open(RIO_IMAGE) as src, rasterio.open(out.classes) as pred:
        assert (pred.crs, pred.transform, pred.shape) == (src.crs, src.transform, src.shape)
        classes = pred.read(1)
        valid = src.read_masks(1) > 0
    building = geoseg.load_bundle("buildings-rgb").meta.classes.names.index("building")
    # the reference, rasterized here: footprints burned by pixel centre on the prediction's grid
    labels = gpd.read_file(RIO_LABELS).to_crs(pred.crs)
    ref = rasterize(labels.geometry, out_shape=classes.shape, transform=pred.transform, fill=0, default_value=1,
                    dtype="uint8").astype(bool)
    p = (classes == building) & valid
    iou = (p & ref & valid).sum() / ((p | ref) & valid).sum()
    row = next(c for c in report["classes"] if c["name"] == "building")
    assert row["iou"] == pytest.approx(iou, abs=1e-9)
    assert printed == pytest.approx(report["overall"]["mean_iou_foreground"], abs=1e-12)
    assert report["overall"]["mean_iou_foreground"] == pytest.approx(row["iou"])
    # the GeoPackage: the building layer, polygons covering the predicted building pixels (min_area=4 m²)
    assert "building" in pyogrio.list_layers(gpkg)[:, 0]
    polys = gpd.read_file(gpkg, layer="building")
    px_area = abs(pred.transform.a * pred.transform.e)
    assert polys.crs == pred.crs and len(polys) > 50
    area = shapely.area(polys.geometry.values).sum()  # in the raster's CRS units, like px_area
    assert 0.95 * p.sum() * px_area <= area <= p.sum() * px_area + 1e-9


def test_train_and_load_config(tmp_path):
    from tests.test_train import scene_with_buildings, write_config

    scene, _, _ = scene_with_buildings(tmp_path)
    path = write_config(tmp_path, train={"epochs": 1}, sampling={"chips_per_epoch": 4})
    cfg = geoseg.load_config(path)
    assert [c.name for c in cfg.classes] == ["background", "building"] and cfg.bands == (1,)
    out = geoseg.train(path, tmp_path / "model", progress=False)
    meta = geoseg.read_meta(out)
    assert (meta.architecture, meta.bands, meta.classes.names) == ("unet", (1,), ["background", "building"])
    (res,) = geoseg.predict(out, [str(scene)], tmp_path / "pred", geoseg.PredictOptions(progress=False))
    with rasterio.open(res.classes) as src:
        assert set(np.unique(src.read(1))) <= {0, 1}


def test_bundles_and_classes(tmp_path):
    models = geoseg.packaged_models()
    assert {"buildings-rgb", "atlanta-buildings"} <= set(models)
    meta = geoseg.read_meta("buildings-rgb")
    assert meta.bands == (1, 2, 3) and [c.name for c in meta.classes if c.vectorize] == ["building"]
    assert geoseg.load_bundle(models["atlanta-buildings"]).meta.bands == (1,)
    classes = geoseg.load_classes(ROOT / "configs" / "classes" / "buildings.yaml")
    assert isinstance(classes, geoseg.ClassList) and "building" in classes.names
    path = geoseg.init_bundle("unet", tmp_path / "init", encoder="resnet18", bands=(1, 2, 3),
                              classes=geoseg.ClassList.from_names(["background", "building", "water"]))
    b = geoseg.load_bundle(path)
    assert b.meta.classes.names == ["background", "building", "water"] and b.meta.architecture == "unet"


def test_check_fit(tmp_path):
    """The embedded scene fits the model trained on it; a 16-bit scene at 2 m does not, and says why."""
    from rasterio.transform import from_origin

    from geoseg.data import RIO_IMAGE
    from geoseg.io.raster import inspect_scene

    meta = geoseg.read_meta("buildings-rgb")
    assert geoseg.check_fit(inspect_scene(RIO_IMAGE, meta.bands), meta) == []
    other = (structured_scene(64, 64).astype("uint16") * 40).astype("uint16")
    path = write_scene(tmp_path / "other.tif", other, transform=from_origin(733600.0, 3725200.0, 2.0, 2.0))
    problems = geoseg.check_fit(inspect_scene(path, meta.bands), meta)
    assert any("is uint16; the model was trained on uint8" in p for p in problems), problems
    assert any(p.startswith("has 2.00 m pixels; the model was trained at 0.4") for p in problems), problems


def test_benchmarks_from_the_package(shared_data, tmp_path):
    from tests.test_benchmarks import voc_predictions

    root = shared_data / "labelme" / "semantic_segmentation" / "data_dataset_voc"
    voc_predictions(root, tmp_path / "preds")
    report = geoseg.benchmarks.evaluate("voc", tmp_path / "preds", tmp_path / "reports" / "voc", root=root)
    assert geoseg.benchmarks.get("VOC").name == "voc"
    assert (tmp_path / "reports" / "voc" / "report.json").is_file() and 0 < report["overall"]["mean_iou"] < 1


def test_workflows_from_the_package(tmp_path, linear_bundle):
    wf = geoseg.load_workflow(ROOT / "workflows" / "demo.yaml")  # the README's example file validates
    assert wf.model == "buildings-rgb" and [s.name for s in wf.steps] == ["predict", "vectorize", "evaluate"]
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    data = structured_scene(96, 128)
    write_scene(scenes / "a.tif", data)
    (tmp_path / "wf.yaml").write_text(f"inputs: [scenes]\nmodel: {linear_bundle}\noutput: out\n"
                                      "steps: [predict, vectorize]\ncluster: {local: {workers: 1}}\n")
    res = geoseg.run_workflow(geoseg.load_workflow(tmp_path / "wf.yaml"), echo=lambda s: None)
    assert res.failures == []
    assert sorted((r.step, r.status) for r in res.results) == [("predict", "done"), ("vectorize", "done")]
    with rasterio.open(tmp_path / "out" / "a.classes.tif") as src:
        np.testing.assert_array_equal(src.read(1), known_class(data))
    assert geoseg.workflows.load_workflow is geoseg.load_workflow


def test_cluster_from_the_package(tmp_path):
    data = structured_scene(96, 128, bands=3)
    scene = write_scene(tmp_path / "s.tif", data)
    (out,) = geoseg.cluster([str(scene)], tmp_path / "c", geoseg.ClusterOptions(k=4, progress=False))
    with rasterio.open(out.clusters) as src:
        labels = src.read(1)
        assert src.crs == rasterio.crs.CRS.from_string("EPSG:32616")
    assert set(np.unique(labels)) == {0, 1, 2, 3}
    # the numbering is by brightness: cluster 0's pixels are darker on average than cluster 3's
    mean = data.astype(float).mean(axis=0)
    assert mean[labels == 0].mean() < mean[labels == 3].mean()
    assert out.model.name == "s.clusters.json"


def test_errors_and_version(tmp_path):
    assert geoseg.__version__ == importlib.metadata.version("geoseg")
    with pytest.raises(geoseg.GeosegError, match="missing.tif"):
        geoseg.predict("buildings-rgb", [str(tmp_path / "missing.tif")], tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing half-written
