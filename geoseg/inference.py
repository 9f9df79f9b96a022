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
    """A bundle's model on a device, turning normalised tiles into blend votes."""

    def __init__(self, bundle_path: str | os.PathLike, device: str = "auto", amp: bool | None = None) -> None:
        bundle = load_bundle(bundle_path)
        self.meta: BundleMeta = bundle.meta
        self.device = resolve_device(device)
        # bf16 autocast only where the hardware has it: on this kind of CPU it is ~250x slower.
        self.amp = (self.device.type == "cuda") if amp is None else amp
        self.model = bundle.model.to(self.device).to(memory_format=torch.channels_last).eval()
        self._lock = threading.Lock()

    @torch.inference_mode()
    def logits(self, tiles: np.ndarray) -> torch.Tensor:
        """Float32 logits ``(N, K, T, T)`` for normalised tiles ``(N, C, T, T)``."""
        x = torch.from_numpy(tiles).to(self.device, non_blocking=True)
        x = x.contiguous(memory_format=torch.channels_last)
        # One forward at a time on a GPU (one stream); on the CPU, workers run their own.
        with self._lock if self.device.type == "cuda" else contextlib.nullcontext():
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                return self.model(x).float()

    @torch.inference_mode()
    def votes(self, tiles: np.ndarray, weights: np.ndarray, ring: int | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
        """Fixed-point blend votes and classes for a batch of tiles.

        ``weights`` ``(N, T, T)`` carries the fixed-point scale. Returns ``votes =
        rint(softmax * w)`` as int32 ``(N, T, T, K)`` and, as uint8 ``(N, T, T)``,
        each pixel's class from this tile alone (the argmax of its logits, first
        index on ties). With ``ring``, votes are computed only within ``ring``
        pixels of the tile's edges (the rest is zero): elsewhere no other tile
        overlaps, and the class alone is needed; votes there are unspecified.
        """
        logits = self.logits(tiles)
        # Class reductions are fast with classes innermost (the channels-last layout).
        cls = logits.permute(0, 2, 3, 1).argmax(-1).to(torch.uint8)
        w = torch.from_numpy(weights).to(self.device, non_blocking=True)
        n, k, t, _ = logits.shape
        if ring is None or 2 * ring >= t:
            q = _quantize(logits, w)
        else:
            q = torch.empty((n, t, t, k), dtype=torch.int32, device=logits.device)  # only the ring is read
            for rows, cols in ((np.s_[:ring], np.s_[:]), (np.s_[t - ring :], np.s_[:]),
                               (np.s_[ring : t - ring], np.s_[:ring]), (np.s_[ring : t - ring], np.s_[t - ring :])):
                q[:, rows, cols] = _quantize(logits[:, :, rows, cols], w[:, rows, cols])
        return q.cpu().numpy(), cls.cpu().numpy()


def _quantize(logits: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``rint(softmax(logits) * w)`` as int32 with classes last; elementwise work in NCHW."""
    p = torch.softmax(logits, dim=1)
    return p.mul_(w[:, None]).round_().to(torch.int32).permute(0, 2, 3, 1).contiguous()


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
