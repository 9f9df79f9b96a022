"""Does a scene fit a model? Band count, data type, value range and ground sample distance.

A model trained on 16-bit panchromatic imagery at 0.5 m runs on band 1 of an
8-bit RGBA image at 0.3 m without complaint and "finds" buildings in shadows.
The bundle knows its bands, input data type, normalisation statistics and GSD;
:func:`check_fit` compares a scene against them from a small sample of windows
and returns one readable line per mismatch.
"""

from __future__ import annotations

import numpy as np
import rasterio
from rasterio.windows import Window

from geoseg.io.raster import SceneInfo, ground_sample_distance, read_window
from geoseg.models.bundle import BundleMeta

GSD_RATIO = 1.5  # more than this far off either way is a mismatch
Z_MEAN = 4.0  # the scene's band mean this many of the bundle's standard deviations from its mean
STD_RATIO = 4.0  # the scene's band spread this many times the bundle's
_SAMPLE_GRID, _SAMPLE_SIDE = 5, 128


def sample_statistics(info: SceneInfo, bands: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-band mean and std of valid pixels in a 5x5 grid of small windows spread over the scene."""
    side = min(_SAMPLE_SIDE, info.width, info.height)
    n = _SAMPLE_GRID
    count = 0
    s = np.zeros(len(bands))
    ss = np.zeros(len(bands))
    for y in np.linspace(0, info.height - side, n).astype(int):
        for x in np.linspace(0, info.width - side, n).astype(int):
            data, valid = read_window(info, Window(int(x), int(y), side, side), bands)
            px = data[:, valid].astype(np.float64)
            count += px.shape[1]
            s += px.sum(1)
            ss += np.square(px).sum(1)
    if count == 0:
        return None
    mean = s / count
    return mean, np.sqrt(np.maximum(ss / count - mean**2, 0))


def check_fit(info: SceneInfo, meta: BundleMeta) -> list[str]:
    """Mismatches between a scene and what the model was trained on, one line each (empty: it fits)."""
    problems = []
    n = len(meta.bands)
    if info.count != n:
        problems.append(f"has {info.count} band{'s' if info.count != 1 else ''}; the model reads "
                        f"band{'s' if n != 1 else ''} {','.join(map(str, meta.bands))} and was trained on "
                        f"{n}-band imagery")
    want = meta.extra.get("input", {}).get("dtype")
    if want:
        with rasterio.open(info.path) as src:
            have = src.dtypes[meta.bands[0] - 1]
        if have != want:
            problems.append(f"is {have}; the model was trained on {want} imagery")
    # Identity normalisation (mean 0, std 1: ``geoseg model init``'s default) records no training statistics.
    known = any(m != 0.0 for m in meta.mean) or any(s != 1.0 for s in meta.std)
    stats = sample_statistics(info, meta.bands) if known else None
    if stats is not None:
        mean, std = stats
        for i, band in enumerate(meta.bands):
            z = abs(mean[i] - meta.mean[i]) / meta.std[i]
            # Only a much wider spread: a uniform scene (water, an empty chip) is no sign of other data.
            if z > Z_MEAN or std[i] / meta.std[i] > STD_RATIO:
                problems.append(f"band {band} has mean {mean[i]:.4g} and std {std[i]:.4g} (sampled); the model "
                                f"was trained on mean {meta.mean[i]:.4g} and std {meta.std[i]:.4g}")
                break
    gsd = ground_sample_distance(info)
    if meta.gsd and gsd and not 1 / GSD_RATIO <= gsd / meta.gsd <= GSD_RATIO:
        problems.append(f"has {gsd:.2f} m pixels; the model was trained at {meta.gsd:.2f} m")
    return problems
