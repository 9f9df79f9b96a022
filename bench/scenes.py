"""Synthetic scenes with realistic structure for the benchmarks, written window by window."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin


def bilinear_rows(g: np.ndarray, r0: int, h: int, width: int, cells: int) -> np.ndarray:
    """Rows ``r0 .. r0+h`` of the coarse grid ``g`` upsampled bilinearly by ``cells``."""
    yy = np.arange(r0, r0 + h, dtype=np.float32) / cells
    xx = np.arange(width, dtype=np.float32) / cells
    y0, x0 = yy.astype(int), xx.astype(int)
    fy, fx = (yy - y0)[:, None], (xx - x0)[None, :]
    a = g[y0][:, x0] * (1 - fx) + g[y0][:, x0 + 1] * fx
    b = g[y0 + 1][:, x0] * (1 - fx) + g[y0 + 1][:, x0 + 1] * fx
    return a * (1 - fy) + b * fy


def smooth_field(h: int, w: int, rng: np.random.Generator, cells: int = 64) -> np.ndarray:
    """Bilinearly upsampled noise: land-cover-like blobs."""
    gh, gw = h // cells + 2, w // cells + 2
    g = rng.random((gh, gw)).astype(np.float32)
    return bilinear_rows(g, 0, h, w, cells)


def write_scene(path: Path, size: int, bands: int = 3, seed: int = 0, rows: int = 1024) -> Path:
    """A ``size x size`` uint8 scene: smooth fields, bright rectangular 'roofs', noise, a nodata corner."""
    path = Path(path)
    if path.exists():
        return path
    rng = np.random.default_rng(seed)
    profile = dict(driver="GTiff", width=size, height=size, count=bands, dtype="uint8", nodata=0,
                   crs="EPSG:32616", transform=from_origin(700000, 3800000, 0.5, 0.5), tiled=True,
                   blockxsize=512, blockysize=512, compress="DEFLATE", interleave="pixel")
    tmp = path.with_suffix(".partial.tif")
    with rasterio.open(tmp, "w", **profile) as dst:
        for r0 in range(0, size, rows):
            h = min(rows, size - r0)
            field = smooth_field(h, size, rng)
            block = []
            for b in range(bands):
                v = 40 + 150 * field * (0.7 + 0.1 * b) + rng.normal(0, 12, (h, size)).astype(np.float32)
                block.append(v)
            block = np.stack(block)
            for _ in range(h * size // 20000):  # buildings: bright rectangles
                y, x = rng.integers(0, h - 8), rng.integers(0, size - 8)
                hh, ww = rng.integers(6, 30, 2)
                block[:, y : y + hh, x : x + ww] = 220 + rng.normal(0, 5)
            arr = np.clip(block, 1, 255).astype(np.uint8)
            if r0 == 0:
                arr[:, : min(h, 300), :300] = 0  # a nodata corner
            dst.write(arr, window=rasterio.windows.Window(0, r0, size, h))
    tmp.rename(path)
    return path


def write_class_raster(path: Path, size: int, classes: int = 4, cells: int = 40, seed: int = 0,
                       rows: int = 1024, structure: str = "labyrinth", share: float = 0.12) -> Path:
    """A ``size x size`` uint8 class raster in ``classes`` classes (0 is background).

    ``labyrinth``: one smooth field cut at its quantiles, so every class covers an equal share and
    the middle classes percolate into components that span the raster (a worst case for seams).
    ``blobs``: one smooth field per class; a class is where its field is in its top ``share``,
    giving separate smooth blobs on a background.
    """
    path = Path(path)
    if path.exists():
        return path
    rng = np.random.default_rng(seed)
    if structure == "blobs":
        grids = [rng.random((size // cells + 2, size // cells + 2)).astype(np.float32) for _ in range(classes - 1)]
        cut = [np.quantile(g, 1 - share) for g in grids]

        def class_rows(r0: int, h: int) -> np.ndarray:
            out = np.zeros((h, size), dtype=np.uint8)
            for c, (g, t) in enumerate(zip(grids, cut), start=1):
                out[bilinear_rows(g, r0, h, size, cells) > t] = c
            return out
    else:
        g = rng.random((size // cells + 2, size // cells + 2)).astype(np.float32)
        edges = np.quantile(g, np.linspace(0, 1, classes + 1)[1:-1])

        def class_rows(r0: int, h: int) -> np.ndarray:
            return np.digitize(bilinear_rows(g, r0, h, size, cells), edges).astype(np.uint8)

    profile = dict(driver="GTiff", width=size, height=size, count=1, dtype="uint8", nodata=255,
                   crs="EPSG:32616", transform=from_origin(700000, 3800000, 0.5, 0.5), tiled=True,
                   blockxsize=512, blockysize=512, compress="ZSTD")
    tmp = path.with_suffix(".partial.tif")
    with rasterio.open(tmp, "w", **profile) as dst:
        for r0 in range(0, size, rows):
            h = min(rows, size - r0)
            dst.write(class_rows(r0, h)[None], window=rasterio.windows.Window(0, r0, size, h))
    tmp.rename(path)
    return path
