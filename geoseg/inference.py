"""Running a bundle's model on batches of tiles, once per worker.

A worker process keeps one :class:`Predictor` per (bundle, device) and reuses
it for every tile. On a GPU, forward passes are serialised by a lock (one
stream is enough) while the other threads read, blend and write. On the CPU,
each worker thread runs its own forward passes with its share of the cores
(see :attr:`geoseg.scheduler.Runner.torch_threads`).
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

import numpy as np
import torch

from geoseg.bundle import BundleMeta, load_bundle
from geoseg.errors import GeosegError

_CACHE: dict[tuple, Predictor] = {}
_CACHE_LOCK = threading.Lock()


def resolve_device(device: str) -> torch.device:
    device = device.lower()
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise GeosegError("--device cuda was asked for, but no CUDA device is available")
    if device not in ("cpu", "cuda"):
        raise GeosegError(f"unknown device {device!r}; choose auto, cpu or cuda")
    return torch.device(device)


class Predictor:
    """A bundle's model on a device, turning normalised tiles into class logits."""

    def __init__(self, bundle_path: str | os.PathLike, device: str = "auto", amp: bool | None = None) -> None:
        bundle = load_bundle(bundle_path)
        self.meta: BundleMeta = bundle.meta
        self.device = resolve_device(device)
        # bf16 autocast only where the hardware has it: on this kind of CPU it is ~250x slower.
        self.amp = (self.device.type == "cuda") if amp is None else amp
        self.model = bundle.model.to(self.device).to(memory_format=torch.channels_last).eval()
        self._lock = threading.Lock()

    @torch.inference_mode()
    def class_logits(self, tiles: np.ndarray) -> np.ndarray:
        """Float32 logits ``(N, T, T, K)``, classes last and C-contiguous on the host, for
        normalised tiles ``(N, T, T, C)``.

        Both sides are channels-last (NHWC memory), the layout the model runs in, so on
        the CPU neither the input nor the output is copied.
        """
        x = torch.from_numpy(tiles).permute(0, 3, 1, 2).to(self.device, non_blocking=True)
        x = x.contiguous(memory_format=torch.channels_last)
        # One forward at a time on a GPU (one stream); on the CPU, workers run their own.
        with self._lock if self.device.type == "cuda" else contextlib.nullcontext():
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                logits = self.model(x).float()
        return logits.permute(0, 2, 3, 1).contiguous().cpu().numpy()


def get_predictor(bundle_path: str | os.PathLike, device: str = "auto") -> Predictor:
    """The worker's predictor for a bundle, loaded once."""
    path = Path(bundle_path).resolve()
    weights = path / "model.safetensors"
    stamp = weights.stat().st_mtime_ns if weights.exists() else None
    key = (str(path), stamp, device)
    with _CACHE_LOCK:
        pred = _CACHE.get(key)
        if pred is None:
            pred = _CACHE[key] = Predictor(path, device)
        return pred
