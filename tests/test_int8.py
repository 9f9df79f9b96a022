"""int8 models (NNCF on OpenVINO), ``--precision auto``'s int8 rule, and the engine path without torch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import rasterio

from geoseg.engines import installed, int8_validated, resolve
from geoseg.errors import GeosegError
from geoseg.models.bundle import init_bundle, read_meta
from geoseg.prediction import PredictOptions, predict
from tests.conftest import ROOT, structured_scene, write_scene

pytestmark = pytest.mark.skipif(not installed("openvino"), reason="openvino (a dependency) has no wheel here")
CONFIG = ROOT / "configs" / "train" / "rio_buildings.yaml"


def geoseg_cli(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "geoseg", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=600)


@pytest.fixture(scope="module")
def quantized(tmp_path_factory, shared_data) -> tuple[Path, dict]:
    """The packaged building model (a small trained model) copied without its int8 model and quantized again
    through the CLI on its training config: calibrated on the training blocks, checked on the validation blocks."""
    from geoseg.data import DEFAULT_MODEL
    from geoseg.models.bundle import resolve_bundle

    bundle = tmp_path_factory.mktemp("int8") / "buildings"
    shutil.copytree(resolve_bundle(DEFAULT_MODEL), bundle, ignore=shutil.ignore_patterns("engines"))
    data = json.loads((bundle / "geoseg.json").read_text())
    data["extra"]["precision_check"].pop("int8", None)
    (bundle / "geoseg.json").write_text(json.dumps(data))
    r = geoseg_cli("model", "quantize", bundle, "--config", CONFIG, "--json",
                   env={"GEOSEG_CACHE_DIR": str(bundle.parent / "cache")})
    assert r.returncode == 0, r.stderr
    assert r.stderr == "", r.stderr  # NNCF's progress bars and logs stay off stderr
    return bundle, json.loads(r.stdout)


def test_int8_agrees_with_fp32_on_the_validation_blocks_and_the_check_is_recorded(quantized):
    bundle, res = quantized
    assert res["argmax_agreement"] >= 0.99
    assert res["data"].startswith("calibration: ") and "validation blocks" in res["data"]
    assert res["calibration_tiles"] > 50 and res["check_tiles"] == 4  # two validation blocks, two validation chips
    recorded = read_meta(bundle).extra["precision_check"]["int8"]
    assert recorded == pytest.approx(res)
    # the measured change against the labels stays within the label-free bound (the Jaccard distance is a metric)
    assert abs(res["iou_change"]) <= res["iou_change_bound"] + 1e-12
    assert res["iou_fp32"] == pytest.approx(read_meta(bundle).extra["precision_check"]["bf16"]["iou_fp32"], abs=1e-9)
    assert res["object_f1_fp32"] > 0.2 and res["object_f1_int8"] > 0.2
    assert (bundle / res["model"]).is_file() and (bundle / res["model"]).with_suffix(".bin").is_file()
    # the guard reads what was recorded
    assert int8_validated(read_meta(bundle)) == (abs(res["iou_change"]) <= 0.005 and res["argmax_agreement"] >= 0.99
                                                 and res["object_f1_change"] >= -0.01)


def test_int8_prediction_is_identical_for_chunks_workers_and_schedulers(quantized, tmp_path):
    from geoseg.data import RIO_IMAGE

    bundle, _ = quantized
    rasters = []
    for n, (chunk, workers, scheduler) in enumerate([(512, 1, "threads"), (1024, 2, "threads"), (256, 2, "threads"),
                                                     (1024, 2, "local")]):
        o = predict(bundle, [str(RIO_IMAGE)], tmp_path / f"o{n}", PredictOptions(
            engine="openvino", precision="int8", chunk_size=chunk, workers=workers, scheduler=scheduler,
            progress=False))
        with rasterio.open(o[0].classes) as src:
            rasters.append(src.read(1))
    for r in rasters[1:]:
        np.testing.assert_array_equal(r, rasters[0])
    fp32 = predict(bundle, [str(RIO_IMAGE)], tmp_path / "fp32", PredictOptions(engine="openvino", precision="fp32",
                                                                               progress=False))
    with rasterio.open(fp32[0].classes) as src:
        ref = src.read(1)
    valid = ref != 255
    assert 0.99 <= (rasters[0] == ref)[valid].mean() < 1.0  # int8 is not fp32, and agrees with it


@pytest.mark.parametrize(("flags", "expected"), [
    ({"avx2", "fma"}, "fp32"),  # AVX2 only: int8 gains little, and no bf16
    ({"avx2", "avx512_vnni"}, "int8"),
    ({"avx2", "avx_vnni"}, "int8"),
    ({"amx_int8", "amx_bf16"}, "int8"),
    ({"avx512_bf16"}, "bf16"),  # no int8 units; the bundle's bf16 check passed
])
def test_auto_picks_int8_only_with_int8_units_and_a_passing_check(quantized, monkeypatch, flags, expected):
    import geoseg.engines.cpu

    bundle, res = quantized
    monkeypatch.setattr(geoseg.engines.cpu, "cpu_flags", lambda: frozenset(flags))
    meta = read_meta(bundle)
    passed = replace(meta, extra={"precision_check": {"bf16": {"iou_change": 0.001},
                                                      "int8": {**res, "iou_change": 0.001, "object_f1_change": 0.0}}})
    assert resolve("auto", "auto", passed, "cpu", bundle).precision == expected
    fallback = "bf16" if "avx512_bf16" in flags or "amx_bf16" in flags else "fp32"
    for change in ({"iou_change": 0.02}, {"argmax_agreement": 0.98}, {"object_f1_change": -0.05},
                   {"iou_change": None, "iou_change_bound": 0.03}):
        failed = replace(meta, extra={"precision_check": {"bf16": {"iou_change": 0.001},
                                                          "int8": {**res, **change, "object_f1_change": 0.0}
                                                          if "object_f1_change" not in change else {**res, **change}}})
        assert resolve("auto", "auto", failed, "cpu", bundle).precision == fallback, change
    # a passing check but no int8 model beside the bundle: not int8
    assert resolve("auto", "auto", passed, "cpu", None).precision == fallback
    assert resolve("openvino", "int8", passed, "cpu", bundle).precision == "int8"  # asked for: always


def test_int8_without_labels_records_the_bound_and_auto_follows_it(tmp_path):
    """Scenes without labels: the check is the agreement with fp32 and the IoU bound it gives."""
    scene = write_scene(tmp_path / "s.tif", structured_scene(512, 512, seed=3))
    bundle = init_bundle("unet", tmp_path / "b", encoder="resnet18", bands=(1, 2, 3), mean=(120.0,) * 3,
                         std=(60.0,) * 3, classes="background,building", tile_size=128, overlap=32, seed=1)
    r = geoseg_cli("model", "quantize", bundle, "--calibration", scene, "--tiles", 12, "--json",
                   env={"GEOSEG_CACHE_DIR": str(tmp_path / "cache")})
    assert r.returncode == 0 and r.stderr == "", r.stderr
    res = json.loads(r.stdout)
    assert res["calibration_tiles"] == 12 and res["check_tiles"] == 4  # 16 tiles: a quarter held back
    assert res["iou_change"] is None and res["iou_change_bound"] == pytest.approx(1 - res["iou_vs_fp32"])
    meta = read_meta(bundle)
    assert int8_validated(meta) == (res["iou_change_bound"] <= 0.005 and res["argmax_agreement"] >= 0.99)
    text = geoseg_cli("model", "quantize", bundle, "--calibration", scene, "--tiles", 12,
                      env={"GEOSEG_CACHE_DIR": str(tmp_path / "cache")})
    assert text.returncode == 0 and "no labels: the bound from the agreement" in text.stdout


@pytest.mark.parametrize(("args", "message"), [
    ([], "give --calibration SCENES or --config TRAIN.yaml (one of them)"),
    (["--calibration", "{scene}", "--config", "{config}"], "give --calibration SCENES or --config TRAIN.yaml (one of them)"),
    (["--calibration", "{scene}", "--tiles", "2"], "--tiles must be at least 4, got 2"),
])
def test_quantize_bad_options_are_one_line(tmp_path, args, message):
    scene = write_scene(tmp_path / "s.tif", structured_scene(256, 256))
    bundle = init_bundle("conv1x1", tmp_path / "b", encoder="none", bands=(1, 2, 3), tile_size=128, overlap=32)
    args = [a.format(scene=scene, config=CONFIG) for a in args]
    r = geoseg_cli("model", "quantize", bundle, *args)
    assert r.returncode == 1 and r.stderr.splitlines() == [f"geoseg: error: {message}"], r.stderr


def test_int8_without_an_int8_model_or_on_another_engine_is_one_line(tmp_path):
    scene = write_scene(tmp_path / "s.tif", structured_scene(256, 256))
    bundle = init_bundle("conv1x1", tmp_path / "b", encoder="none", bands=(1, 2, 3), tile_size=128, overlap=32)
    r = geoseg_cli("predict", bundle, scene, "-o", tmp_path / "o", "--precision", "int8", "--no-progress",
                   env={"GEOSEG_CACHE_DIR": str(tmp_path / "cache")})
    assert r.returncode == 1 and r.stderr.splitlines() == [
        f"geoseg: error: {bundle}: has no int8 model: quantize it first (geoseg model quantize BUNDLE --calibration "
        "SCENES) or use --precision fp32"], r.stderr
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").iterdir())
    r = geoseg_cli("predict", bundle, scene, "-o", tmp_path / "o", "--precision", "int8", "--engine", "torch",
                   "--no-progress")
    assert r.returncode == 1 and r.stderr.splitlines() == [
        "geoseg: error: --precision int8 runs on --engine openvino (its quantized model), not torch"], r.stderr
    with pytest.raises(GeosegError, match="int8 runs on --engine openvino"):
        resolve("onnxruntime", "int8", read_meta(bundle))


_NO_TORCH = """
import sys
from geoseg.cli.main import main
sys.argv = ['geoseg'] + sys.argv[1:]
try:
    main()
except SystemExit as exc:
    assert not exc.code, exc.code
print(sorted(m for m in ('torch', 'timm', 'segmentation_models_pytorch', 'torchvision') if m in sys.modules))
"""


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_predict_with_a_cached_conversion_never_imports_torch(quantized, tmp_path, precision):
    from geoseg.data import RIO_IMAGE

    bundle, _ = quantized
    env = {**os.environ, "GEOSEG_CACHE_DIR": str(bundle.parent / "cache")}  # where the fixture converted fp32
    r = subprocess.run([sys.executable, "-c", _NO_TORCH, "predict", str(bundle), str(RIO_IMAGE), "-o",
                        str(tmp_path / "o"), "--no-progress", "--precision", precision, "--workers", "2"],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1] == "[]", r.stdout
    assert r.stderr == "1 scene predicted\n"  # nothing about engines or precisions
    assert (tmp_path / "o" / "rio_heldout.instances.gpkg").is_file()


@pytest.mark.skipif(not installed("onnxruntime"), reason="onnxruntime is not installed")
def test_onnxruntime_after_model_compile_never_imports_torch(tmp_path):
    scene = write_scene(tmp_path / "s.tif", structured_scene(300, 300))
    bundle = init_bundle("unet", tmp_path / "b", encoder="resnet18", bands=(1, 2, 3), tile_size=128, overlap=32)
    assert geoseg_cli("model", "compile", bundle, "--engine", "onnxruntime").returncode == 0
    r = subprocess.run([sys.executable, "-c", _NO_TORCH, "predict", str(bundle), str(scene), "-o",
                        str(tmp_path / "o"), "--no-progress", "--engine", "onnxruntime", "--workers", "2"],
                       capture_output=True, text=True, env={**os.environ, "GEOSEG_CACHE_DIR": str(tmp_path / "c")})
    assert r.returncode == 0 and r.stdout.splitlines()[-1] == "[]", r.stderr + r.stdout


def test_model_check_measures_int8_where_the_bundle_has_it(quantized, tmp_path, monkeypatch):
    import geoseg.evaluation.engines as engines_check
    from geoseg.data import RIO_IMAGE

    bundle, _ = quantized
    monkeypatch.setattr(engines_check, "native_int8", lambda: True)  # the row is listed on CPUs with int8 units
    res = engines_check.check(bundle, str(RIO_IMAGE), work=tmp_path / "w")
    rows = {(r["engine"], r["precision"]): r for r in res["rows"]}
    assert ("openvino", "int8") in rows and ("openvino", "fp32") in rows
    assert 0.99 <= rows["openvino", "int8"]["argmax_agreement"] < 1.0  # against torch fp32 on the whole crop
    monkeypatch.setattr(engines_check, "native_int8", lambda: False)
    assert ("openvino", "int8") not in engines_check.combinations(int8=True)
    assert ("openvino", "int8") not in engines_check.combinations(include_slow=True, int8=False)
