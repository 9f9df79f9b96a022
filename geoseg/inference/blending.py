"""Blend weights for overlapping tiles, and exact accumulation of their votes.

A blend mode gives each tile a weight per pixel. The blended probability of a
pixel is the weighted mean of the softmax probabilities of the tiles that
cover it, and its class is their argmax.

Weighted probabilities are accumulated as fixed-point integers
(:data:`SCALE` = 2^24 per unit). Integer addition is associative, so the sum
does not depend on how tiles are grouped into chunks, batches or workers:
output is bit-identical for any chunking and scheduler. The quantum is 6e-8,
far below what a uint8 probability or an argmax can resolve.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import numpy as np

from geoseg.errors import GeosegError

SCALE = float(2**24)


def _cosine(tile: int, overlap: int, first: bool, last: bool) -> np.ndarray:
    # A raised-cosine ramp over the overlap; neighbouring ramps sum to one and
    # never reach zero, and there is no ramp at the scene's edges.
    w = np.ones(tile, dtype=np.float64)
    if overlap:
        ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(overlap) + 0.5) / overlap)
        if not first:
            w[:overlap] = ramp
        if not last:
            w[tile - overlap :] = ramp[::-1]
    return w


def _average(tile: int, overlap: int, first: bool, last: bool) -> np.ndarray:
    return np.ones(tile, dtype=np.float64)


def _crop(tile: int, overlap: int, first: bool, last: bool) -> np.ndarray:
    # Keep only the tile's centre; the centres of neighbouring tiles abut exactly.
    w = np.zeros(tile, dtype=np.float64)
    half = overlap // 2
    lo = 0 if first else half
    hi = tile if last else tile - overlap + half
    w[lo:hi] = 1.0
    return w


BLEND_MODES: dict[str, Callable[[int, int, bool, bool], np.ndarray]] = {
    "cosine": _cosine,
    "average": _average,
    "crop": _crop,
}


def check_blend(mode: str) -> str:
    name = mode.lower()
    if name not in BLEND_MODES:
        raise GeosegError(f"unknown blend mode {mode!r}; choose one of: {', '.join(BLEND_MODES)}")
    return name


@lru_cache(maxsize=64)
def tile_weights(mode: str, tile: int, overlap: int, first_row: bool, last_row: bool,
                 first_col: bool, last_col: bool) -> np.ndarray:
    """The ``tile x tile`` float32 weight of a tile at the given scene edges."""
    fn = BLEND_MODES[check_blend(mode)]
    w = np.outer(fn(tile, overlap, first_row, last_row), fn(tile, overlap, first_col, last_col))
    w = w.astype(np.float32)
    w.setflags(write=False)
    return w


@lru_cache(maxsize=64)
def scaled_tile_weights(mode: str, tile: int, overlap: int, first_row: bool, last_row: bool,
                        first_col: bool, last_col: bool) -> np.ndarray:
    """:func:`tile_weights` times the fixed-point :data:`SCALE` (exact: a power of two), read-only."""
    w = tile_weights(mode, tile, overlap, first_row, last_row, first_col, last_col) * np.float32(SCALE)
    w.setflags(write=False)
    return w
