"""Converting a bundle's model for OpenVINO or ONNX Runtime, and running it on NHWC tiles.

Both engines get the model wrapped so that it takes and returns channels-last (NHWC) arrays, the
layout of geoseg's tiles and votes, with a dynamic batch dimension: a tile goes in and its logits
come out without a copy on geoseg's side.

torch is imported only to convert; running a converted (or quantized) model needs none.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from geoseg.engines import cache
from geoseg.errors import GeosegError

log = logging.getLogger("geoseg")
_CONVERT_LOCK = threading.Lock()
# the CPU plugin's inference precision; an int8 model's quantized layers run in int8, the rest in fp32
OV_PRECISION = {"fp32": "f32", "bf16": "bf16", "fp16": "f16", "int8": "f32"}

if TYPE_CHECKING:
    from torch import nn


def _openvino():
    _no_telemetry()
    try:
        import openvino
    except ImportError:
        raise GeosegError("--engine openvino needs the openvino package: pip install geoseg[openvino]") from None
    return openvino


def _no_telemetry() -> None:
    """Keep OpenVINO's converter on its own telemetry stub.

    Importing ``openvino.tools.ovc`` and converting a model otherwise send usage events to Google
    Analytics (unless a consent file in the user's home says no), each from a forked process: geoseg
    uses no network at run time, and a fork of a process running Dask and OpenMP threads hung here.
    Its modules fall back to the stub when ``openvino_telemetry`` cannot be imported, which a ``None``
    entry in ``sys.modules`` makes so.
    """
    import importlib
    import sys

    if "openvino_telemetry" not in sys.modules:
        sys.modules["openvino_telemetry"] = None
        return
    if sys.modules["openvino_telemetry"] is None:
        return
    try:  # imported before geoseg ran: point the converter's modules at the stub
        stub = importlib.import_module("openvino.tools.ovc.telemetry_stub")
    except ImportError:
        return
    for name in ("main", "convert_impl", "telemetry_utils", "utils"):
        module = sys.modules.get(f"openvino.tools.ovc.{name}")
        if module is not None and hasattr(module, "tm"):
            module.tm = stub


def nhwc(model: nn.Module) -> nn.Module:
    """``model`` taking ``(N, H, W, C)`` and returning ``(N, H, W, K)`` logits."""
    from torch import nn

    class NHWC(nn.Module):
        def __init__(self, model: nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, x):
            return self.model(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)

    return NHWC(model)


@contextlib.contextmanager
def _quiet():
    import logging as _logging

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        old = _logging.getLogger("torch.onnx").level
        _logging.getLogger("torch.onnx").setLevel(_logging.ERROR)
        try:
            yield
        finally:
            _logging.getLogger("torch.onnx").setLevel(old)


def convert(bundle: Path, model: nn.Module, engine: str, tile: int, channels: int, precision: str = "fp32",
            target: Path | None = None) -> Path:
    """The engine's model file for this bundle and tile shape, converted once (then read from the cache).

    An int8 model is not converted here: ``geoseg model quantize`` (or ``geoseg train``) calibrates it.
    """
    from geoseg.io.output import tmp_name

    path = target or cache.find(bundle, engine, tile, channels, precision)
    if path.exists():
        return path
    if precision == "int8":
        raise GeosegError("has no int8 model: quantize it first (geoseg model quantize BUNDLE --calibration "
                          "SCENES) or use --precision fp32", bundle)
    import torch

    with _CONVERT_LOCK:
        if path.exists():
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        log.info("%s: converting for %s (once; cached in %s)", bundle, engine, path.parent)
        wrapped = nhwc(model.float().eval())
        example = torch.zeros(1, tile, tile, channels)
        tmp = tmp_name(path, "convert" + path.suffix)
        try:
            with _quiet(), torch.inference_mode(False), torch.no_grad():
                if engine == "openvino":
                    ov = _openvino()
                    om = ov.convert_model(wrapped, example_input=example,
                                          input=[ov.PartialShape([1, tile, tile, channels])])
                    ov.save_model(om, str(tmp), compress_to_fp16=False)
                    os.replace(tmp.with_suffix(".bin"), path.with_suffix(".bin"))
                else:
                    torch.onnx.export(wrapped, (example,), str(tmp), input_names=["tiles"], output_names=["logits"],
                                      dynamic_axes={"tiles": {0: "n"}, "logits": {0: "n"}}, opset_version=18,
                                      dynamo=False)
            os.replace(tmp, path)  # the model file last: its presence means the conversion is complete
        except Exception as exc:
            for p in (tmp, tmp.with_suffix(".bin")):
                p.unlink(missing_ok=True)
            raise GeosegError(f"cannot convert {bundle.name} for {engine} ({exc.__class__.__name__}: "
                              f"{str(exc).splitlines()[0][:200] if str(exc) else ''}); use --engine torch") from None
    return path


class OpenVINORunner:
    """A compiled OpenVINO model: ``streams`` concurrent callers, ``threads`` cores each.

    The model's shape is static, one tile: an infer request of a model with a dynamic batch specialises
    itself on its first inference at each new shape, and requests doing that at once from several threads
    can hang OpenVINO's CPU plugin on a machine with few cores (seen here, 2 cores: 2 hangs in about
    75 runs; ultralytics#25923 describes the same). A batch runs as one inference per tile, which on the CPU
    costs nothing (measured: batches of 1 and 4 take the same time per tile). Each calling thread has its
    own request; requests are made, and run their first inference, one at a time.
    """

    def __init__(self, xml: Path, precision: str, streams: int, threads: int, tile: int | None = None) -> None:
        core = _openvino().Core()
        model = core.read_model(str(xml))
        shape = list(model.input(0).get_partial_shape())
        if tile and (shape[1] != tile or shape[2] != tile):  # an int8 model, calibrated at another tile size
            model.reshape([1, tile, tile, shape[3]])
        self.compiled = core.compile_model(model, "CPU", {
            "INFERENCE_PRECISION_HINT": OV_PRECISION[precision], "NUM_STREAMS": str(max(1, streams)),
            "INFERENCE_NUM_THREADS": max(1, streams) * max(1, threads), "ENABLE_CPU_PINNING": False})
        self._local = threading.local()
        self._first = threading.Lock()

    def __call__(self, tiles: np.ndarray) -> np.ndarray:
        if not len(tiles):
            return np.zeros((0, *self.compiled.output(0).shape[1:]), dtype=np.float32)
        req, out = getattr(self._local, "request", None), []
        if req is None:
            with self._first:
                req = self.compiled.create_infer_request()
                out.append(self._infer(req, tiles[0]))
            self._local.request = req
        out += [self._infer(req, t) for t in tiles[len(out):]]
        return np.stack(out)

    @staticmethod
    def _infer(req, tile: np.ndarray) -> np.ndarray:
        # the tile is read in place (no copy into the request); the logits are copied out of it
        req.infer({0: np.ascontiguousarray(tile[None])}, share_inputs=True)
        return np.array(req.get_output_tensor(0).data[0], dtype=np.float32, copy=True)


class ONNXRuntimeRunner:
    """One ONNX Runtime session for all calling threads (``run`` is thread-safe), ``threads`` cores in all.

    One session holds the weights and the optimised graph once, where a session per thread held them per
    thread; concurrent calls share its intra-op pool.
    """

    def __init__(self, path: Path, threads: int) -> None:
        self.path, self.threads = str(path), max(1, threads)
        self._session = None
        self._lock = threading.Lock()

    def session(self):
        with self._lock:
            if self._session is None:
                try:
                    import onnxruntime as ort
                except ImportError:
                    raise GeosegError("--engine onnxruntime needs the onnxruntime package: pip install "
                                      "geoseg[onnxruntime]") from None
                opts = ort.SessionOptions()
                opts.intra_op_num_threads = self.threads
                opts.inter_op_num_threads = 1
                opts.log_severity_level = 3
                self._session = ort.InferenceSession(self.path, opts, providers=["CPUExecutionProvider"])
            return self._session

    def __call__(self, tiles: np.ndarray) -> np.ndarray:
        return self.session().run(None, {"tiles": tiles})[0]


def compile_bundle(bundle, engine: str, tile_size: int | None = None) -> Path:
    """``geoseg model compile``: the conversion written beside the bundle (``BUNDLE/engines/``)."""
    from geoseg.engines import check_engine, installed
    from geoseg.models.bundle import load_bundle, resolve_bundle

    check_engine(engine, "fp32")
    if engine not in ("openvino", "onnxruntime"):
        raise GeosegError(f"model compile converts for openvino or onnxruntime, not {engine}")
    if not installed(engine):
        raise GeosegError(f"--engine {engine} needs the {engine} package: pip install geoseg[{engine}]")
    path = resolve_bundle(bundle)
    b = load_bundle(path)
    tile = tile_size or b.meta.tile_size
    target = path / "engines" / cache.weights_hash(path)[:16] / cache.artifact_name(engine, tile, b.meta.in_channels)
    try:
        return convert(path, b.model, engine, tile, b.meta.in_channels, target=target)
    except PermissionError:
        raise GeosegError("is read-only; without model compile the conversion goes to the user cache", path) from None
