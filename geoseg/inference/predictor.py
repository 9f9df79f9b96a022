"""Running a bundle's model on batches of tiles, once per worker.

A worker process keeps one :class:`Predictor` per (bundle, device) and reuses
it for every tile. On a GPU, forward passes are serialised by a lock (one
stream is enough) while the other threads read, blend and write. On the CPU,
each worker thread runs its own forward passes with its share of the cores
(see :attr:`geoseg.inference.scheduler.Runner.torch_threads`).

An engine whose conversion is cached runs without torch: this module imports it only for the torch
engine, for a conversion, and to ask for a CUDA device on a machine that has NVIDIA device nodes.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from geoseg.errors import GeosegError
from geoseg.models.bundle import BundleMeta, load_bundle, read_meta, resolve_bundle

if TYPE_CHECKING:
    import torch

_CACHE: dict[tuple, Predictor] = {}
_CACHE_LOCK = threading.Lock()


def _no_nvidia_device() -> bool:
    """True where CUDA cannot be there: Linux without NVIDIA's device nodes (``/dev/nvidia*``, WSL's ``/dev/dxg``)."""
    import glob
    import sys

    return sys.platform.startswith("linux") and not glob.glob("/dev/nvidia*") and not os.path.exists("/dev/dxg")


def device_type(device: str) -> str:
    """``cpu`` or ``cuda`` for ``--device auto|cpu|cuda``; torch is imported only where a GPU may be present."""
    device = device.lower()
    if device not in ("auto", "cpu", "cuda"):
        raise GeosegError(f"unknown device {device!r}; choose auto, cpu or cuda")
    if device == "cpu" or (device == "auto" and _no_nvidia_device()):
        return "cpu"
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available():
        raise GeosegError("--device cuda was asked for, but no CUDA device is available")
    return "cuda"


def resolve_device(device: str) -> torch.device:
    """The torch device for ``--device`` (training and the torch engine)."""
    import torch

    return torch.device(device_type(device))


def default_batch_size(device: str) -> int:
    """Tiles per forward pass when none is given: 8 on CUDA, 1 on the CPU."""
    # On the CPU a batch buys nothing (measured: batch 1 or 2 per forward take the same time per
    # tile), and each concurrent worker's activations cost memory.
    return 8 if device_type(device) == "cuda" else 1


class Predictor:
    """A bundle's model on a device and engine, turning normalised tiles into class logits.

    ``engine`` ``torch`` runs the model eagerly (bf16 autocast on CUDA, or on the CPU when
    ``precision`` is bf16); ``openvino`` and ``onnxruntime`` run its conversion for ``tile`` px tiles
    (see :mod:`geoseg.engines`), ``streams`` callers at a time with ``threads`` cores each.
    """

    def __init__(self, bundle_path: str | os.PathLike, device: str = "auto", amp: bool | None = None,
                 engine: str = "torch", precision: str = "fp32", tile: int | None = None, streams: int = 1,
                 threads: int | None = None) -> None:
        bundle_path = resolve_bundle(bundle_path)
        # An engine whose conversion is cached needs no torch model: only the metadata is read.
        meta = read_meta(bundle_path) if engine != "torch" else None
        converted = _cached_conversion(Path(bundle_path), meta, engine, tile, precision) if meta else None
        bundle = None if converted else load_bundle(bundle_path)
        self.meta: BundleMeta = meta if converted else bundle.meta
        self.device_type = device_type(device)
        self.engine, self.precision = engine, precision
        # bf16 autocast only where asked (CUDA; --precision bf16): on CPUs without native bf16 it is ~250x slower.
        self.amp = (self.device_type == "cuda" or precision == "bf16") if amp is None else amp
        self.runner = self.model = self.device = None
        if engine != "torch":
            from geoseg.engines.runtime import ONNXRuntimeRunner, OpenVINORunner, convert

            threads = threads or os.cpu_count() or 1
            path = converted or convert(Path(bundle_path), bundle.model, engine, tile or self.meta.tile_size,
                                        self.meta.in_channels, precision)
            self.runner = (OpenVINORunner(path, precision, streams, threads, tile or self.meta.tile_size)
                           if engine == "openvino" else ONNXRuntimeRunner(path, streams * threads))
        else:
            import torch

            self.device = torch.device(self.device_type)
            self.model = bundle.model.to(self.device).to(memory_format=torch.channels_last).eval()
        self._lock = threading.Lock()

    def class_logits(self, tiles: np.ndarray) -> np.ndarray:
        """Float32 logits ``(N, T, T, K)``, classes last and C-contiguous on the host, for
        normalised tiles ``(N, T, T, C)``.

        Both sides are channels-last (NHWC memory), the layout the model runs in, so on
        the CPU neither the input nor the output is copied.
        """
        if self.runner is not None:
            return self.runner(tiles)
        import torch

        with torch.inference_mode():
            return self._torch_logits(tiles)

    def _torch_logits(self, tiles: np.ndarray) -> np.ndarray:
        import torch

        x = torch.from_numpy(tiles).permute(0, 3, 1, 2).to(self.device, non_blocking=True)
        x = x.contiguous(memory_format=torch.channels_last)
        # One forward at a time on a GPU (one stream); on the CPU, workers run their own.
        with self._lock if self.device_type == "cuda" else contextlib.nullcontext():
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                logits = self.model(x).float()
        return logits.permute(0, 2, 3, 1).contiguous().cpu().numpy()


def _cached_conversion(bundle: Path, meta: BundleMeta, engine: str, tile: int | None,
                       precision: str = "fp32") -> Path | None:
    """The engine's converted model for this bundle and tile size, if it is already cached."""
    from geoseg.engines import cache

    if not (bundle / "model.safetensors").is_file():
        return None  # load_bundle names the problem
    path = cache.find(bundle, engine, tile or meta.tile_size, meta.in_channels, precision)
    return path if path.exists() else None


def get_predictor(bundle_path: str | os.PathLike, device: str = "auto", engine: str = "torch",
                  precision: str = "fp32", tile: int | None = None, streams: int = 1,
                  threads: int | None = None) -> Predictor:
    """The worker's predictor for a bundle (and engine, precision, tile size, threads), loaded once."""
    path = Path(bundle_path).resolve()
    weights = path / "model.safetensors"
    stamp = weights.stat().st_mtime_ns if weights.exists() else None
    key = (str(path), stamp, device_type(device), engine, precision, tile if engine != "torch" else None,
           (streams, threads) if engine != "torch" else None)
    with _CACHE_LOCK:
        pred = _CACHE.get(key)
        if pred is None:
            pred = _CACHE[key] = Predictor(path, device, engine=engine, precision=precision, tile=tile,
                                           streams=streams, threads=threads)
        return pred
