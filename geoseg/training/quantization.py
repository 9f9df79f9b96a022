"""The int8 model of a trained bundle: calibrated on its training blocks, checked on its validation blocks.

What ``geoseg train`` runs at its end (in the precision-check process) and ``geoseg model quantize
--config`` runs for an existing bundle. Calibration tiles come from the training blocks only, cut
to the bundle's tile size; the check runs on the validation blocks whole, against their labels
(foreground IoU, and object F1 with the bundle's decoding where it has object channels). The test
blocks are never read. See :mod:`geoseg.engines.quantize` for the model and the guard.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
from rasterio.windows import Window

from geoseg.engines.quantize import CALIBRATION_TILES, fp32_model, int8_target, normalise_tile, quantize_openvino
from geoseg.errors import GeosegError
from geoseg.evaluation.int8 import CheckTile, check_int8
from geoseg.io.raster import read_window
from geoseg.training.config import TrainConfig
from geoseg.training.data import open_scene, read_labels


def _pieces(win: Window, tile: int) -> list[Window]:
    """A block cut into windows of at most ``tile`` px."""
    out = []
    for y in range(0, int(win.height), tile):
        for x in range(0, int(win.width), tile):
            out.append(Window(win.col_off + x, win.row_off + y, min(tile, win.width - x), min(tile, win.height - y)))
    return out


def quantize_on_validation(bundle, cfg: TrainConfig, tiles: int = CALIBRATION_TILES, record: bool = True) -> dict:
    from geoseg.engines.cpu import describe
    from geoseg.engines.runtime import OpenVINORunner
    from geoseg.inference.objects import DecodeSettings
    from geoseg.models.bundle import read_meta, record_precision_check, resolve_bundle
    from geoseg.training.decoding import ObjectWindow, object_scores, reference_instances
    from geoseg.vector.labels import read_instances

    bundle = resolve_bundle(bundle)
    meta = read_meta(bundle)
    if not cfg.scenes:
        raise GeosegError("the config has no scenes (chip folders have no validation blocks to check int8 on)",
                          cfg.source)
    if not os.access(bundle, os.W_OK):
        raise GeosegError("is read-only; copy the bundle to quantize it", bundle)
    t = meta.tile_size
    sources = [open_scene(s, cfg) for s in cfg.scenes]
    calib = [(src, w) for src in sources for block in src.training_windows() for w in _pieces(block, t)]
    calib = [calib[i] for i in sorted(np.random.default_rng(cfg.train.seed).permutation(len(calib))[:tiles])]
    checks = [(src, w) for src in sources for w in src.validation_windows()]
    checks += [(v, w) for v in (open_scene(s, cfg, held_out=False) for s in cfg.validation.scenes)
               for w in v.training_windows()]  # separate validation scenes, whole, as training validates on them
    if not calib or not checks:
        raise GeosegError("the config has no training or no validation blocks to calibrate and check int8 on",
                          cfg.source)

    def transform(item):
        src, win = item
        data, valid = read_window(src.info, win, cfg.bands)
        return normalise_tile(data, valid, meta.mean, meta.std, t)[None]

    t0 = time.perf_counter()
    target = quantize_openvino(fp32_model(bundle, meta), calib, transform, int8_target(bundle, meta), t)
    seconds = time.perf_counter() - t0
    check_tile = -(-cfg.validation.block_size // 32) * 32
    threads = os.cpu_count() or 1
    fp32 = OpenVINORunner(fp32_model(bundle, meta, check_tile), "fp32", 1, threads)
    int8 = OpenVINORunner(target, "int8", 1, threads, check_tile)
    with_objects = cfg.objects is not None and meta.objects is not None

    def tiles_():
        for src, win in checks:
            data, valid = read_window(src.info, win, cfg.bands)
            refs = None
            if with_objects:
                ids, _ = read_instances(src.labels, src.grid, win)
                ids[~valid] = 0
                refs = reference_instances(ids, src.labels.ids, tuple(cfg.objects.classes))
            yield CheckTile(normalise_tile(data, valid, meta.mean, meta.std, check_tile), valid,
                            read_labels(src, win, valid), refs)

    decode = DecodeSettings(**meta.objects.decode) if with_objects else None
    result = check_int8(fp32, int8, tiles_(), meta.classes, (lambda windows: object_scores(
        [ObjectWindow(p, r) for p, r in windows], decode)["f1"]) if with_objects else None)
    result.update(calibration_tiles=len(calib), data=f"calibration: {len(calib)} tiles of the training blocks; "
                  f"check: the {len(checks)} validation blocks and scene windows", cpu=describe(), quantize_seconds=seconds,
                  model=str(Path(target).relative_to(bundle)))
    if record:
        record_precision_check(bundle, {"int8": result})
    return result
