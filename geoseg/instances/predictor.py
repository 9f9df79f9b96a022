"""Running an instance bundle on batches of raw tiles, once per worker (as ``geoseg.inference.predictor`` for classes)."""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from geoseg.inference.predictor import resolve_device
from geoseg.models.bundle import load_bundle

_CACHE: dict[tuple, InstancePredictor] = {}
_CACHE_LOCK = threading.Lock()


@dataclass
class Detection:
    """One detection in tile pixels: a boolean mask cropped to its box, at (y0, x0)."""

    y0: int
    x0: int
    mask: np.ndarray
    label: int
    score: float


def crop(mask: np.ndarray) -> tuple[int, int, np.ndarray] | None:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not rows.size:
        return None
    return int(rows[0]), int(cols[0]), mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].copy()


class InstancePredictor:
    """An instance bundle's model on a device: raw ``(N, C, T, T)`` tiles in, cropped detections out."""

    def __init__(self, bundle_path: str | os.PathLike, device: str = "auto") -> None:
        bundle = load_bundle(bundle_path)
        self.meta = bundle.meta
        self.device = resolve_device(device)
        self.model = bundle.model.to(self.device).eval()
        self._lock = threading.Lock()

    @torch.inference_mode()
    def detect(self, tiles: np.ndarray, mask_threshold: float = 0.5) -> list[list[Detection]]:
        x = torch.from_numpy(np.ascontiguousarray(tiles)).to(self.device)
        with self._lock if self.device.type == "cuda" else contextlib.nullcontext():
            outputs = self.model(list(x))
        found = []
        for out in outputs:
            dets = []
            if "crops" in out:  # a model that returns cropped masks already (the oracle)
                for (y0, x0, m), label, score in zip(out["crops"], out["labels"].tolist(), out["scores"].tolist()):
                    dets.append(Detection(int(y0), int(x0), np.asarray(m, dtype=bool), int(label), float(score)))
                found.append(dets)
                continue
            masks = out["masks"][:, 0] >= mask_threshold
            masks = masks.cpu().numpy()
            for m, label, score in zip(masks, out["labels"].tolist(), out["scores"].tolist()):
                c = crop(m)
                if c is not None:
                    dets.append(Detection(c[0], c[1], c[2], int(label), float(score)))
            found.append(dets)
        return found


def get_instance_predictor(bundle_path: str | os.PathLike, device: str = "auto") -> InstancePredictor:
    path = Path(bundle_path).resolve()
    weights = path / "model.safetensors"
    key = (str(path), weights.stat().st_mtime_ns if weights.exists() else None, device)
    with _CACHE_LOCK:
        pred = _CACHE.get(key)
        if pred is None:
            pred = _CACHE[key] = InstancePredictor(path, device)
        return pred
