"""``geoseg model check``: each engine and precision against torch fp32 on a scene, measured here
(int8 too, where the bundle has an int8 model from ``geoseg model quantize``).

For every engine and precision this machine can run, the scene is predicted end to end and
compared with torch fp32: argmax agreement over the scene, the largest logit difference on a sample
of tiles, seconds per tile, and the foreground IoU change (against a reference when one is given,
else the IoU of the two class rasters). ``record`` writes the bf16 result into the bundle's
``geoseg.json`` (``extra.precision_check.bf16``), which ``--precision auto`` reads.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np

from geoseg.engines import PRECISIONS, installed
from geoseg.engines.cpu import describe, native_bf16, native_fp16, native_int8
from geoseg.errors import GeosegError

log = logging.getLogger("geoseg")


def combinations(include_slow: bool = False, int8: bool = False) -> list[tuple[str, str]]:
    """(engine, precision) pairs worth measuring here: emulated bf16 only when asked; int8 where the bundle has
    an int8 model (``int8``) and the CPU int8 units, or when asked."""
    out = [("torch", "fp32")]
    if installed("onnxruntime"):
        out.append(("onnxruntime", "fp32"))
    if installed("openvino"):
        native = {"fp32": True, "bf16": native_bf16(), "fp16": native_fp16(), "int8": int8 and native_int8()}
        out += [("openvino", p) for p in PRECISIONS if native[p] or (include_slow and (p != "int8" or int8))]
    if native_bf16() or include_slow:
        out.append(("torch", "bf16"))
    return out


def _sample_tiles(scene: str, meta, tile: int, n: int = 4) -> np.ndarray:
    from rasterio.windows import Window

    from geoseg.engines.quantize import normalise_tile
    from geoseg.inference.tiling import TileGrid
    from geoseg.io.raster import inspect_scene, read_window

    info = inspect_scene(scene, meta.bands)
    tiles = []
    for t in TileGrid(info.height, info.width, tile, 0).tiles()[:n]:
        h, w = min(tile, info.height - t.y), min(tile, info.width - t.x)
        data, valid = read_window(info, Window(t.x, t.y, w, h), meta.bands)
        tiles.append(normalise_tile(data, valid, meta.mean, meta.std, tile))
    return np.ascontiguousarray(np.stack(tiles))


def _foreground_iou(a: np.ndarray, b: np.ndarray, classes) -> float:
    from geoseg.evaluation.metrics import confusion, foreground_iou

    cm = confusion(b, a, len(classes), valid=(a != 255) & (b != 255))
    iou = foreground_iou(cm, [c.id for c in classes if c.vectorize])
    return float("nan") if iou is None else iou


def check(bundle, scene: str, reference: str | None = None, tile_size: int | None = None,
          include_slow: bool = False, record: bool = False, work: str | os.PathLike | None = None) -> dict:
    import rasterio

    from geoseg.inference.predictor import get_predictor
    from geoseg.models.bundle import read_meta, record_precision_check, resolve_bundle
    from geoseg.prediction import PredictOptions, predict

    bundle = resolve_bundle(bundle)
    meta = read_meta(bundle)
    tile = tile_size or meta.tile_size
    if record and reference is None:
        raise GeosegError("--record needs --reference: the recorded check is an IoU change against real labels")
    sample = _sample_tiles(scene, meta, tile)
    work = Path(work) if work else Path(os.environ.get("TMPDIR", "/tmp")) / f"geoseg-check-{os.getpid()}"
    rows, base, base_logits, base_iou = [], None, None, None
    try:
        from geoseg.engines import has_int8_model

        for engine, precision in combinations(include_slow, has_int8_model(bundle, meta, tile)):
            out = work / f"{engine}-{precision}"
            opts = PredictOptions(engine=engine, precision=precision, tile_size=tile, progress=False, overwrite=True,
                                  workers=1)
            t0 = time.perf_counter()
            res = predict(bundle, [scene], out, opts)[0]
            seconds = time.perf_counter() - t0
            with rasterio.open(res.classes) as src:
                classes = src.read(1)
            logits = get_predictor(bundle, "cpu", engine, precision, tile, 1, os.cpu_count()).class_logits(sample)
            iou = None
            if reference is not None:
                from geoseg.evaluation.evaluate import EvaluateOptions, evaluate

                rep = evaluate(res.classes, reference, work / f"eval-{engine}-{precision}",
                               EvaluateOptions(overwrite=True, audit=False, progress=False,
                                               reference_class=_reference_class(meta)))
                iou = rep["overall"]["mean_iou_foreground"]
            if base is None:
                base, base_logits, base_iou = classes, logits, iou
            valid = (classes != 255) & (base != 255)
            row = {"engine": engine, "precision": precision, "seconds": seconds,
                   "argmax_agreement": float((classes == base)[valid].mean()) if valid.any() else None,
                   "max_logit_difference": float(np.abs(logits - base_logits).max()),
                   "iou": iou, "iou_change": None if iou is None or base_iou is None else iou - base_iou,
                   "agreement_iou": _foreground_iou(classes, base, meta.classes)}
            rows.append(row)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {"bundle": str(bundle), "scene": str(scene), "cpu": describe(), "native_bf16": native_bf16(),
              "tile_size": tile, "rows": rows}
    if record:
        bf16 = next((r for r in rows if r["engine"] == "openvino" and r["precision"] == "bf16"), None)
        if bf16 is None:
            raise GeosegError("no bf16 run to record: this CPU has no native bf16 (or openvino is missing); "
                              "pass --include-slow to measure emulated bf16")
        record_precision_check(bundle, {"bf16": {"engine": "openvino", "iou_fp32": base_iou, "iou_bf16": bf16["iou"],
                                  "iou_change": bf16["iou_change"], "argmax_agreement": bf16["argmax_agreement"],
                                  "scene": Path(scene).name, "reference": Path(reference).name, "cpu": describe()}})
    return result


def _reference_class(meta) -> str | None:
    fg = [c.name for c in meta.classes if c.vectorize]
    return fg[0] if len(fg) == 1 else None
