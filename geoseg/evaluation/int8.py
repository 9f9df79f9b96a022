"""The int8 check: fp32 against int8 on tiles held back from calibration, and ``geoseg model quantize`` on scenes.

See :mod:`geoseg.engines.quantize` for the model, the figures and the guard.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from geoseg.classes import NODATA
from geoseg.engines.quantize import CALIBRATION_TILES, fp32_model, int8_target, normalise_tile, quantize_openvino
from geoseg.errors import GeosegError


@dataclass
class CheckTile:
    """One held-back tile: the normalised input (``T x T x C``, zero-padded) and what is known about it."""

    x: np.ndarray
    valid: np.ndarray  # (h, w) bool: the tile's real pixels with data
    labels: np.ndarray | None = None  # (h, w) class ids, 255 where unknown
    references: list | None = field(default=None, repr=False)  # per object class, reference instances (h, w)


def check_int8(fp32, int8, tiles: Iterable[CheckTile], classes, object_f1: Callable[[list], float] | None = None
               ) -> dict:
    """fp32 against int8 on held-back tiles (see the module's docstring); ``fp32``/``int8`` map tiles to logits.

    ``object_f1``: the object F1 of ``[(object-channel probabilities as uint8, tile.references), ...]`` (the
    training package's scorer), for tiles with references.
    """
    from geoseg.evaluation.metrics import confusion, foreground_iou

    k = len(classes)
    fg = [c.id for c in classes if c.vectorize]
    both = np.zeros((k, k), np.int64)
    vs_labels = {"fp32": np.zeros((k, k), np.int64), "int8": np.zeros((k, k), np.int64)}
    windows: dict[str, list] = {"fp32": [], "int8": []}
    seconds = {"fp32": 0.0, "int8": 0.0}
    agree = total = n = 0
    labelled = objects = False
    for t in tiles:
        h, w = t.valid.shape
        out = {}
        for name, run in (("fp32", fp32), ("int8", int8)):
            t0 = time.perf_counter()
            logits = run(t.x[None])[0, :h, :w]
            seconds[name] += time.perf_counter() - t0
            out[name] = logits
        a, b = (out[p][..., :k].argmax(-1) for p in ("fp32", "int8"))
        agree += int((a == b)[t.valid].sum())
        total += int(t.valid.sum())
        both += confusion(a, b, k, valid=t.valid)
        n += 1
        if t.labels is not None:
            labelled = True
            for name, pred in (("fp32", a), ("int8", b)):
                vs_labels[name] += confusion(t.labels, pred, k, valid=(t.labels != NODATA) & t.valid)
        if t.references is not None and object_f1 is not None and out["fp32"].shape[-1] > k:
            objects = True
            for name in ("fp32", "int8"):
                probs = 1 / (1 + np.exp(-np.moveaxis(out[name][..., k:], -1, 0).astype(np.float32)))
                probs[:, ~t.valid] = 0
                windows[name].append((np.rint(probs * 255).astype(np.uint8), t.references))
    if not n or not total:
        raise GeosegError("no held-back tile with data to check the int8 model on")
    agreement_iou = foreground_iou(both, fg)
    result = {"engine": "openvino", "check_tiles": n, "argmax_agreement": agree / total,
              "iou_vs_fp32": agreement_iou,
              "iou_change_bound": None if agreement_iou is None else 1 - agreement_iou,
              "iou_fp32": None, "iou_int8": None, "iou_change": None,
              "speedup": seconds["fp32"] / seconds["int8"] if seconds["int8"] else None}
    if labelled:
        a, b = foreground_iou(vs_labels["fp32"], fg), foreground_iou(vs_labels["int8"], fg)
        result.update(iou_fp32=a, iou_int8=b, iou_change=None if a is None or b is None else b - a)
    if objects:
        f = {name: float(object_f1(windows[name])) for name in windows}
        result.update(object_f1_fp32=f["fp32"], object_f1_int8=f["int8"], object_f1_change=f["int8"] - f["fp32"])
    return result


def quantize(bundle, scenes: Sequence[str], tiles: int = CALIBRATION_TILES, seed: int = 0,
             record: bool = True) -> dict:
    """``geoseg model quantize``: calibrate on tiles of ``scenes``, check on a quarter of them held back.

    Without labels the check is the agreement and the IoU bound (see the module's docstring).
    """
    from rasterio.windows import Window

    from geoseg.engines.cpu import describe
    from geoseg.engines.runtime import OpenVINORunner
    from geoseg.inference.tiling import TileGrid
    from geoseg.io.raster import inspect_scene, read_window
    from geoseg.models.bundle import read_meta, record_precision_check, resolve_bundle
    from geoseg.models.names import is_instance_architecture

    bundle = resolve_bundle(bundle)
    meta = read_meta(bundle)
    if is_instance_architecture(meta.architecture):
        raise GeosegError(f"{meta.architecture} models run on torch; there is no int8 model of them", bundle)
    if tiles < 4:
        raise GeosegError(f"--tiles must be at least 4, got {tiles}")
    if not os.access(bundle, os.W_OK):
        raise GeosegError("is read-only; copy the bundle to quantize it", bundle)
    t = meta.tile_size
    windows = []
    infos = [inspect_scene(s, meta.bands) for s in scenes]
    for i, info in enumerate(infos):
        for tl in TileGrid(info.height, info.width, t, 0).tiles():
            windows.append((i, Window(tl.x, tl.y, min(t, info.width - tl.x), min(t, info.height - tl.y))))
    if not windows:
        raise GeosegError("no tile to calibrate on in the calibration scenes")
    order = np.random.default_rng(seed).permutation(len(windows))
    n_check = max(1, len(windows) // 4)
    check_w = [windows[i] for i in order[:n_check]][: max(1, tiles // 3)]
    calib_w = [windows[i] for i in order[n_check:]][:tiles] or check_w  # one-tile scenes: nothing else to use

    def read(item):
        i, win = item
        return read_window(infos[i], win, meta.bands)

    def transform(item):
        return normalise_tile(*read(item), meta.mean, meta.std, t)[None]

    fp32_xml = fp32_model(bundle, meta)
    target = int8_target(bundle, meta)
    t0 = time.perf_counter()
    quantize_openvino(fp32_xml, calib_w, transform, target, t)
    seconds = time.perf_counter() - t0
    threads = os.cpu_count() or 1
    fp32 = OpenVINORunner(fp32_xml, "fp32", 1, threads)
    int8 = OpenVINORunner(target, "int8", 1, threads, t)

    def check_tiles():
        for item in check_w:
            data, valid = read(item)
            if valid.any():
                yield CheckTile(normalise_tile(data, valid, meta.mean, meta.std, t), valid)

    result = check_int8(fp32, int8, check_tiles(), meta.classes)
    result.update(calibration_tiles=len(calib_w), data=f"{len(calib_w)} calibration and {result['check_tiles']} "
                  f"held-back tiles of {', '.join(Path(s).name for s in scenes)}", cpu=describe(),
                  quantize_seconds=seconds)
    if record:
        record_precision_check(bundle, {"int8": result})
    return result


def summary(result: dict) -> str:
    """One line of a check's figures."""
    from geoseg.engines import int8_check_passes

    def f(v, spec=".4f"):
        return "–" if v is None else format(v, spec)

    parts = [f"int8 check on {result['check_tiles']} held-back tiles: argmax agreement "
             f"{f(result['argmax_agreement'], '.2%')}"]
    if result.get("iou_change") is not None:
        parts.append(f"foreground IoU {f(result['iou_fp32'])} fp32, {f(result['iou_int8'])} int8 "
                     f"(change {result['iou_change']:+.4f})")
    else:
        parts.append(f"IoU change at most {f(result['iou_change_bound'])} (no labels: the bound from the agreement)")
    if result.get("object_f1_change") is not None:
        parts.append(f"object F1 {result['object_f1_fp32']:.4f} fp32, {result['object_f1_int8']:.4f} int8")
    if result.get("speedup"):
        parts.append(f"{result['speedup']:.2f}x fp32 here")
    parts.append("--precision auto uses it on CPUs with int8 units" if int8_check_passes(result) else
                 "--precision auto keeps fp32 (IoU change above 0.005, agreement below 99% or object F1 down by more than 0.01)")
    return "; ".join(parts)
