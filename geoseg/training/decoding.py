"""Object F1 of a model's object channels on held-out windows, and the decoding thresholds tuned for it.

Each validation window keeps the model's object-channel probabilities (uint8, 0..255) and the
window's reference instances (each labelled polygon one number). Decoding
(:func:`geoseg.inference.objects.decode_objects`) runs on each window whole; objects are matched to
the reference as the SpaceNet scorer matches them (IoU >= 0.5, one to one, reference objects of
20 px or less left out, counts summed over windows), the rule ``geoseg evaluate`` applies.

The thresholds are picked on a grid (seed score, body mask, minimum object area); ties go to the
setting nearest the defaults, so that a flat optimum does not drift.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from geoseg.evaluation.metrics import f1_of_counts, instance_overlaps, match_instance_rasters, match_overlaps
from geoseg.inference.objects import DecodeSettings, decode_objects

MIN_REFERENCE_PX = 20
SEEDS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
MASKS = (0.3, 0.4, 0.5, 0.6, 0.7)
MIN_AREAS = (0, 16, 32, 64, 100, 150, 200, 300, 400)


@dataclass
class ObjectWindow:
    """One held-out window: object-channel probabilities and its reference instances per object class."""

    probabilities: np.ndarray  # uint8 (3 * classes, H, W)
    references: list  # int32 (H, W) per object class, 0: none


def reference_instances(ids: np.ndarray, feature_classes, classes: tuple[int, ...]) -> list[np.ndarray]:
    """Per object class, the window's instances of that class (feature ``n`` as ``n + 1``)."""
    cls = np.concatenate([[-1], np.asarray(feature_classes)])[ids]
    return [np.where(cls == c, ids, 0).astype(np.int32) for c in classes]


def window_counts(window: ObjectWindow, settings: DecodeSettings) -> tuple[int, int, int]:
    tp = fp = fn = 0
    for ci, ref in enumerate(window.references):
        p = window.probabilities[3 * ci : 3 * ci + 3].astype(np.float32) / 255
        pred = decode_objects(p[0], p[1], p[2], settings)
        s = match_instance_rasters(ref, pred, min_reference_px=MIN_REFERENCE_PX)
        tp, fp, fn = tp + s.tp, fp + s.fp, fn + s.fn
    return tp, fp, fn


def object_scores(windows: list[ObjectWindow], settings: DecodeSettings) -> dict:
    """Summed counts and F1 over the windows."""
    counts = np.array([window_counts(w, settings) for w in windows] or [(0, 0, 0)]).sum(0)
    tp, fp, fn = (int(v) for v in counts)
    return {"f1": float(f1_of_counts(tp, fp, fn)), "tp": tp, "fp": fp, "fn": fn}


def tune_decoding(windows: list[ObjectWindow], base: DecodeSettings | None = None) -> tuple[DecodeSettings, dict]:
    """The grid's best thresholds for summed object F1 on ``windows``, and their scores."""
    base = base or DecodeSettings()
    counts: dict[tuple, np.ndarray] = {}
    for w in windows:
        for ci, ref in enumerate(w.references):
            p = w.probabilities[3 * ci : 3 * ci + 3].astype(np.float32) / 255
            for seed in SEEDS:
                for mask in MASKS:
                    pred = decode_objects(p[0], p[1], p[2], replace(base, seed=seed, mask=mask, min_area=0))
                    ov = instance_overlaps(ref, pred)  # once per decoding; each minimum area only filters it
                    for area in MIN_AREAS:
                        s = match_overlaps(ov, min_reference_px=MIN_REFERENCE_PX, min_prediction_px=area)
                        key = (seed, mask, area)
                        counts[key] = counts.get(key, 0) + np.array([s.tp, s.fp, s.fn])
    if not counts:
        return base, {"f1": 0.0, "tp": 0, "fp": 0, "fn": 0}

    def rank(key):
        tp, fp, fn = counts[key]
        seed, mask, area = key
        return (round(float(f1_of_counts(tp, fp, fn)), 6),
                -(abs(seed - base.seed) + abs(mask - base.mask) + abs(area - base.min_area) / 100))

    best = max(counts, key=rank)
    tp, fp, fn = (int(v) for v in counts[best])
    settings = replace(base, seed=best[0], mask=best[1], min_area=best[2])
    return settings, {"f1": float(f1_of_counts(tp, fp, fn)), "tp": tp, "fp": fp, "fn": fn}


__all__ = ["ObjectWindow", "object_scores", "reference_instances", "tune_decoding", "window_counts"]
