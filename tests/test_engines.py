"""CPU engines (OpenVINO, ONNX Runtime) against torch: logits, class rasters, invariance, cache, fallbacks."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import rasterio
import torch

from geoseg.engines import installed, resolve
from geoseg.engines.cpu import native_bf16
from geoseg.errors import GeosegError
from geoseg.inference.predictor import Predictor
from geoseg.models.bundle import init_bundle, load_bundle
from geoseg.prediction import PredictOptions, predict
from tests.conftest import structured_scene, write_scene

ENGINES = [e for e in ("openvino", "onnxruntime") if installed(e)]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GEOSEG_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("engines")
    out = {}
    for arch, enc in (("unet", "resnet18"), ("deeplabv3plus", "resnet18"), ("fcn8s", "vgg16")):
        torch.manual_seed(0)
        out[arch] = init_bundle(arch, root / arch, encoder=enc, bands=(1, 2, 3), mean=(120.0,) * 3, std=(60.0,) * 3,
                                classes="building,road,water", tile_size=128, overlap=32, seed=1)
    return out


@pytest.mark.parametrize("arch", ["unet", "deeplabv3plus", "fcn8s"])
@pytest.mark.parametrize("engine", ENGINES)
def test_engine_logits_and_classes_equal_torch(bundles, arch, engine, tmp_path):
    bundle = bundles[arch]
    torch_pred = Predictor(bundle, "cpu")
    other = Predictor(bundle, "cpu", engine=engine, precision="fp32", tile=128, threads=2)
    x = np.random.default_rng(0).normal(size=(2, 128, 128, 3)).astype(np.float32)
    a, b = torch_pred.class_logits(x), other.class_logits(x)
    assert a.shape == b.shape == (2, 128, 128, 4)
    assert np.abs(a - b).max() < 1e-3
    # tiles aligned with the scene and no overlap: each pixel's logits are one tile's, as computed below
    scene = write_scene(tmp_path / "s.tif", structured_scene(384, 256, seed=2))
    outs = {}
    for e in ("torch", engine):
        o = predict(bundle, [str(scene)], tmp_path / e, PredictOptions(engine=e, precision="fp32", overlap=0,
                                                                       progress=False))
        with rasterio.open(o[0].classes) as src:
            outs[e] = src.read(1)
    logits = _scene_logits(torch_pred, scene)
    top2 = np.sort(logits, axis=-1)
    clear = (top2[..., -1] - top2[..., -2]) > 1e-2
    assert clear.mean() > 0.5
    np.testing.assert_array_equal(outs[engine][clear], outs["torch"][clear])


def _scene_logits(pred: Predictor, scene) -> np.ndarray:
    """Torch's logits of every 128 px tile of a scene whose sides are multiples of 128."""
    with rasterio.open(scene) as src:
        x = (src.read().astype(np.float32) - 120.0) / 60.0
    h, w = x.shape[1:]
    out = np.zeros((h, w, 4), np.float32)
    for y in range(0, h, 128):
        for xx in range(0, w, 128):
            out[y : y + 128, xx : xx + 128] = pred.class_logits(np.ascontiguousarray(
                np.moveaxis(x[:, y : y + 128, xx : xx + 128], 0, -1)[None]))[0]
    return out


@pytest.mark.parametrize("engine", ENGINES)
def test_engine_output_identical_for_chunks_and_workers(bundles, engine, tmp_path):
    scene = write_scene(tmp_path / "s.tif", structured_scene(700, 650, seed=4))
    rasters = []
    for n, (chunk, workers) in enumerate([(256, 1), (1024, 2), (256, 2), (1024, 1)]):
        o = predict(bundles["unet"], [str(scene)], tmp_path / f"o{n}", PredictOptions(
            engine=engine, precision="fp32", chunk_size=chunk, workers=workers, progress=False))
        with rasterio.open(o[0].classes) as src:
            rasters.append(src.read(1))
    for r in rasters[1:]:
        np.testing.assert_array_equal(r, rasters[0])


@pytest.mark.skipif(not ENGINES, reason="neither openvino nor onnxruntime is installed")
def test_conversion_is_cached_and_new_weights_invalidate_it(bundles, tmp_path, monkeypatch):
    import geoseg.inference.predictor
    from geoseg.engines import cache

    engine = ENGINES[0]
    bundle = tmp_path / "b"
    init_bundle("unet", bundle, encoder="resnet18", bands=(1, 2, 3), tile_size=128, overlap=32, seed=3)
    Predictor(bundle, "cpu", engine=engine, tile=128, threads=1)
    path = cache.find(bundle, engine, 128, 3)
    assert path.exists() and str(path).startswith(os.environ["GEOSEG_CACHE_DIR"])
    stamp = path.stat().st_mtime_ns
    with monkeypatch.context() as m:  # a second run reads it, and needs no torch model for it
        m.setattr(geoseg.inference.predictor, "load_bundle", lambda *a: pytest.fail("the torch model was built"))
        again = Predictor(bundle, "cpu", engine=engine, tile=128, threads=1)
    assert again.model is None and again.meta.tile_size == 128
    assert path.stat().st_mtime_ns == stamp
    init_bundle("unet", bundle, encoder="resnet18", bands=(1, 2, 3), tile_size=128, overlap=32, seed=4,
                overwrite=True)
    assert cache.find(bundle, engine, 128, 3) != path  # new weights: another key
    x = np.random.default_rng(1).normal(size=(1, 128, 128, 3)).astype(np.float32)
    new = Predictor(bundle, "cpu", engine=engine, tile=128, threads=1).class_logits(x)
    ref = Predictor(bundle, "cpu").class_logits(x)
    assert np.abs(new - ref).max() < 1e-3  # the new weights, not the cached old ones


@pytest.mark.parametrize("engine", ENGINES)
def test_engine_threads_calling_at_once_get_each_their_own_logits(bundles, engine):
    """Worker threads share one predictor: each thread's first batch (OpenVINO specialises a request then) and
    later ones, of any size, give the logits a lone caller gets."""
    import threading

    pred = Predictor(bundles["unet"], "cpu", engine=engine, precision="fp32", tile=128, streams=3, threads=1)
    rng = np.random.default_rng(5)
    batches = [rng.normal(size=(n, 128, 128, 3)).astype(np.float32) for n in (1, 3, 2, 1, 2, 1)]
    got, errors = {}, []
    start = threading.Barrier(3)

    def work(i):
        try:
            start.wait()
            for j in (i, i + 3):
                got[j] = pred.class_logits(batches[j])
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors and not any(t.is_alive() for t in threads)
    alone = Predictor(bundles["unet"], "cpu", engine=engine, precision="fp32", tile=128, threads=1)
    for j, b in enumerate(batches):
        assert got[j].shape == (len(b), 128, 128, 4)
        np.testing.assert_array_equal(got[j], alone.class_logits(b))


@pytest.mark.skipif(not installed("openvino"), reason="openvino is not installed")
def test_model_compile_writes_beside_the_bundle(tmp_path):
    from click.testing import CliRunner

    from geoseg.cli.main import cli

    bundle = init_bundle("unet", tmp_path / "b", encoder="resnet18", bands=(1, 2, 3), tile_size=128, overlap=32)
    res = CliRunner().invoke(cli, ["model", "compile", str(bundle), "--engine", "openvino"])
    assert res.exit_code == 0, res.output
    xml = list((bundle / "engines").rglob("*.xml"))
    assert len(xml) == 1 and xml[0].with_suffix(".bin").exists()
    from geoseg.engines import cache

    assert cache.find(bundle, "openvino", 128, 3) == xml[0]  # read before the user cache


def test_missing_engine_is_one_line_and_auto_falls_back(tmp_path, caplog):
    """Run in a subprocess where the engine packages cannot be imported (a platform without their wheels)."""
    bundle = init_bundle("conv1x1", tmp_path / "b", encoder="none", bands=(1, 2, 3), tile_size=128, overlap=32)
    scene = write_scene(tmp_path / "s.tif", structured_scene(200, 200))
    code = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('openvino', 'onnxruntime'):
            raise ImportError(name)
sys.meta_path.insert(0, Block())
import importlib.util
real = importlib.util.find_spec
importlib.util.find_spec = lambda n, *a: None if n.split('.')[0] in ('openvino', 'onnxruntime') else real(n, *a)
sys.argv = ['geoseg', 'predict', {str(bundle)!r}, {str(scene)!r}, '-o', {str(tmp_path / 'o')!r}, '--no-progress'] + sys.argv[1:]
from geoseg.cli.main import main
main()
"""
    r = subprocess.run([sys.executable, "-c", code, "--engine", "openvino"], capture_output=True, text=True)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 1 and lines == ["geoseg: error: --engine openvino needs the openvino package: "
                                           "pip install geoseg[openvino]"], r.stderr
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stderr == "1 scene predicted\n"  # torch, silently: the same lines as with an engine
    r = subprocess.run([sys.executable, "-c", code.replace("'predict'", "'-v', 'predict'")], capture_output=True,
                       text=True)
    assert r.returncode == 0 and "engine auto: neither openvino nor onnxruntime is installed here; running torch" \
        in r.stderr and "engine torch, precision fp32" in r.stderr, r.stderr


def test_resolve_rules(bundles):
    from geoseg.models.bundle import read_meta

    meta = read_meta(bundles["unet"])
    assert resolve("torch", "auto", meta).precision == "fp32"
    if installed("openvino"):
        assert resolve("auto", "auto", meta) == resolve("openvino", "fp32", meta)  # not validated for bf16
    if installed("onnxruntime"):
        with pytest.raises(GeosegError, match="runs fp32 only"):
            resolve("onnxruntime", "bf16", meta)
    with pytest.raises(GeosegError, match="fp16 on the CPU needs --engine openvino"):
        resolve("torch", "fp16", meta)
    from dataclasses import replace

    validated = replace(meta, extra={"precision_check": {"bf16": {"iou_change": -0.002}}})
    if installed("openvino"):
        assert resolve("auto", "auto", validated).precision == ("bf16" if native_bf16() else "fp32")
    far = replace(meta, extra={"precision_check": {"bf16": {"iou_change": -0.02}}})
    assert resolve("auto", "auto", far).precision == "fp32"


@pytest.mark.skipif(not (installed("openvino") and native_bf16()),
                    reason="bf16 is checked only where the CPU computes it natively (amx_bf16 or avx512_bf16)")
def test_default_model_bf16_within_0005_of_fp32(tmp_path):
    from geoseg.data import DEFAULT_MODEL, RIO_IMAGE, RIO_LABELS
    from geoseg.evaluation.evaluate import EvaluateOptions, evaluate

    ious = {}
    for precision in ("fp32", "bf16"):
        out = predict(DEFAULT_MODEL, [str(RIO_IMAGE)], tmp_path / precision, PredictOptions(
            engine="openvino", precision=precision, progress=False))[0]
        rep = evaluate(out.classes, RIO_LABELS, tmp_path / f"e{precision}", EvaluateOptions(
            reference_class="building", audit=False, progress=False))
        ious[precision] = rep["overall"]["mean_iou_foreground"]
    assert abs(ious["bf16"] - ious["fp32"]) <= 0.005, ious


def test_instance_bundles_fall_back_to_torch(tmp_path, caplog):
    bundle = init_bundle("components", tmp_path / "c", encoder="none", bands=(1,), classes="object", tile_size=128,
                         overlap=32)
    scene = write_scene(tmp_path / "s.tif", structured_scene(150, 150, bands=1))
    if ENGINES:  # an engine that cannot convert the architecture: torch, with one line
        import logging

        with caplog.at_level(logging.WARNING, logger="geoseg"):
            out = predict(bundle, [str(scene)], tmp_path / "o", PredictOptions(engine=ENGINES[0], progress=False))
        assert f"engine {ENGINES[0]} cannot run components models; running torch" in caplog.text
    out = predict(bundle, [str(scene)], tmp_path / "o2", PredictOptions(progress=False))  # auto: torch
    assert out[0].instances.exists()
    assert load_bundle(bundle).meta.architecture == "components"


@pytest.mark.skipif(not installed("openvino"), reason="openvino is not installed")
def test_openvino_conversion_sends_nothing_and_forks_nothing(tmp_path):
    """OpenVINO's converter sends telemetry from forked processes on import and on conversion; geoseg keeps it on
    its stub. A fresh process (this one may have converted already) records every fork and connection."""
    bundle = init_bundle("unet", tmp_path / "b", encoder="resnet18", bands=(1, 2, 3), tile_size=128, overlap=32)
    code = f"""
import multiprocessing, socket, time
calls = []
def record(*args, **kwargs):
    calls.append(repr(args)[:80])
    raise OSError('refused by the test')
multiprocessing.Process.start = record
socket.socket.connect = record
import numpy as np
from geoseg.inference.predictor import Predictor
p = Predictor({str(bundle)!r}, 'cpu', engine='openvino', tile=128, threads=1)
assert p.class_logits(np.zeros((1, 128, 128, 3), np.float32)).shape == (1, 128, 128, 4)
time.sleep(2)
print('calls', len(calls), calls)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, "GEOSEG_CACHE_DIR": str(tmp_path / "cache")})
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().endswith("calls 0 []"), r.stdout
