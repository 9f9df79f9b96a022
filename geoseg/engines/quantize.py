"""int8 models: NNCF post-training quantization of a bundle's OpenVINO conversion.

``geoseg model quantize BUNDLE --calibration SCENES`` (and ``geoseg train`` at its end) calibrates the
bundle's fp32 OpenVINO model with NNCF (``nncf.quantize``: activation statistics on the calibration
tiles, then fast bias correction) and writes the int8 model beside the bundle
(``BUNDLE/engines/<weights hash>/openvino-int8-<bands>band.xml``). The model is calibrated once and
reshaped to any tile size when compiled.

The check (:mod:`geoseg.evaluation.int8`) runs fp32 and int8 on tiles held back from calibration:

- argmax agreement over valid pixels;
- the foreground IoU of the int8 classes against the fp32 classes. One minus it bounds the change of
  the IoU against *any* reference: the Jaccard distance is a metric, so
  ``|IoU(int8, ref) - IoU(fp32, ref)| <= 1 - IoU(int8, fp32)`` per class, and so for their mean;
- with labels (the training config's validation blocks), the IoU of both against them, and with
  object channels the object F1 of both (the SpaceNet rule, as ``geoseg train`` scores it).

``--precision auto`` uses int8 only where the measured change (else the bound) is at most 0.005, the
agreement at least 99% and, where measured, the object F1 fell by at most 0.01 (on the validation
blocks of buildings-rgb one object more or less moves F1 by about 0.003)
(:func:`geoseg.engines.int8_validated`), on CPUs with int8 units.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from geoseg.errors import GeosegError

log = logging.getLogger("geoseg")
CALIBRATION_TILES = 300  # NNCF's default subset size


def _nncf():
    from geoseg.engines.runtime import _openvino

    _openvino()  # the telemetry stub first: nncf sends nothing either
    try:
        import nncf
    except ImportError:
        raise GeosegError("int8 quantization needs the nncf package (a dependency of geoseg where OpenVINO has "
                          "wheels), which is not installed here") from None
    if not log.isEnabledFor(logging.DEBUG):
        logging.getLogger("nncf").setLevel(logging.ERROR)
    return nncf


def quantize_openvino(fp32_xml: Path, items: Sequence, transform: Callable[[object], np.ndarray], target: Path,
                      tile: int) -> Path:
    """Calibrate ``fp32_xml`` on ``transform(item)`` (``1 x T x T x C`` arrays) and write the int8 model to ``target``."""
    from geoseg.engines.runtime import _openvino
    from geoseg.io.output import tmp_name

    nncf = _nncf()
    ov = _openvino()
    model = ov.Core().read_model(str(fp32_xml))
    channels = model.input(0).get_partial_shape()[3].get_length()
    model.reshape([1, tile, tile, channels])
    chatter = io.StringIO()  # NNCF's progress bars: shown with --debug
    with contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
        # NNCF's default preset (symmetric activations): on buildings-rgb's validation blocks it changed object
        # F1 by -0.007 where MIXED (asymmetric) did by -0.019 and keeping the first and last convolutions in fp32
        # did not help (bench/RESULTS.md)
        q = nncf.quantize(model, nncf.Dataset(list(items), transform), subset_size=len(items),
                          preset=nncf.QuantizationPreset.PERFORMANCE)
    log.debug("%s", chatter.getvalue().strip())
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(target, "int8.xml")
    try:
        ov.save_model(q, str(tmp), compress_to_fp16=False)
        os.replace(tmp.with_suffix(".bin"), target.with_suffix(".bin"))
        os.replace(tmp, target)  # the model file last: its presence means the model is complete
    except BaseException:
        for p in (tmp, tmp.with_suffix(".bin")):
            p.unlink(missing_ok=True)
        raise
    return target


def int8_target(bundle: Path, meta) -> Path:
    """Where a bundle's int8 model goes: beside it (``BUNDLE/engines/``)."""
    from geoseg.engines import cache

    return (Path(bundle) / "engines" / cache.weights_hash(bundle)[:16]
            / cache.artifact_name("openvino", meta.tile_size, meta.in_channels, "int8"))


def normalise_tile(data: np.ndarray, valid: np.ndarray, mean, std, tile: int) -> np.ndarray:
    """A ``(bands, h, w)`` window as the model's zero-padded ``(tile, tile, bands)`` input (no data: 0)."""
    x = np.zeros((tile, tile, data.shape[0]), np.float32)
    h, w = data.shape[1:]
    norm = (data.astype(np.float32) - np.asarray(mean, np.float32)[:, None, None]) \
        / np.asarray(std, np.float32)[:, None, None]
    norm[:, ~valid] = 0
    x[:h, :w] = np.moveaxis(norm, 0, -1)
    return x


def fp32_model(bundle: Path, meta, tile: int | None = None) -> Path:
    """The bundle's fp32 OpenVINO model (converted once; torch is loaded only to convert)."""
    from geoseg.engines import cache
    from geoseg.engines.runtime import convert

    tile = tile or meta.tile_size
    model = None
    if not cache.find(bundle, "openvino", tile, meta.in_channels).exists():
        from geoseg.models.bundle import load_bundle

        model = load_bundle(bundle).model
    return convert(bundle, model, "openvino", tile, meta.in_channels)
