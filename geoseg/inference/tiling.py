"""The global tile grid of a scene and its decomposition into chunks ("blocks").

One grid per scene: tile ``k`` along an axis starts at ``k * stride`` with
``stride = tile_size - overlap``; there are just enough tiles to cover the axis.
The last tile may reach past the scene edge, and that part is filled by
reflection inside the tile (see :func:`pad_tile`), so a tile's content depends
only on the scene and the grid, never on how the scene is chunked.

A block is a rectangle of whole tiles, the unit of one Dask task. Because
``overlap <= tile_size / 2``, a tile overlaps only its direct neighbours, and
a block's tiles reach at most ``overlap`` pixels into the next block: that
margin is handed on to the right and lower neighbours (see ``predict``), so
no tile is ever run twice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from rasterio.windows import Window


@dataclass(frozen=True)
class AxisGrid:
    """Tile starts along one axis of length ``size``."""

    size: int
    tile: int
    stride: int

    @property
    def n(self) -> int:
        if self.size <= self.tile:
            return 1
        return 1 + math.ceil((self.size - self.tile) / self.stride)

    def start(self, k: int) -> int:
        return k * self.stride


@dataclass(frozen=True)
class Tile:
    """One tile of the global grid (row and column index, pixel origin)."""

    row: int
    col: int
    y: int
    x: int


@dataclass(frozen=True)
class Span:
    """A block's extent along one axis, in scene pixels.

    ``[start, end)`` is what the block's tiles cover inside the scene;
    ``[start, final_end)`` is the part whose output the block finishes;
    ``[final_end, end)`` is the margin passed to the next block.
    """

    first_tile: int
    stop_tile: int
    start: int
    final_end: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.start

    @property
    def final_size(self) -> int:
        return self.final_end - self.start


def _spans(axis: AxisGrid, tiles_per_block: int) -> list[Span]:
    spans = []
    for k0 in range(0, axis.n, tiles_per_block):
        k1 = min(k0 + tiles_per_block, axis.n)
        start = axis.start(k0)
        end = min(axis.start(k1 - 1) + axis.tile, axis.size)
        final_end = axis.size if k1 == axis.n else min(axis.start(k1), axis.size)
        spans.append(Span(k0, k1, start, final_end, end))
    return spans


@dataclass(frozen=True)
class Block:
    """A chunk of the scene: the tiles ``rows x cols`` of the global grid."""

    i: int
    j: int
    rows: Span
    cols: Span

    @property
    def read_window(self) -> Window:
        """Everything the block's tiles cover inside the scene."""
        return Window(self.cols.start, self.rows.start, self.cols.size, self.rows.size)

    @property
    def final_window(self) -> Window:
        """The part of the output this block completes."""
        return Window(self.cols.start, self.rows.start, self.cols.final_size, self.rows.final_size)

    @property
    def n_tiles(self) -> int:
        return (self.rows.stop_tile - self.rows.first_tile) * (self.cols.stop_tile - self.cols.first_tile)


@dataclass(frozen=True)
class TileGrid:
    """The global tile grid of a ``height x width`` scene."""

    height: int
    width: int
    tile_size: int
    overlap: int

    def __post_init__(self) -> None:
        if not 0 <= self.overlap <= self.tile_size // 2:
            raise ValueError("overlap must be between 0 and tile_size // 2")

    @property
    def stride(self) -> int:
        return self.tile_size - self.overlap

    @property
    def rows(self) -> AxisGrid:
        return AxisGrid(self.height, self.tile_size, self.stride)

    @property
    def cols(self) -> AxisGrid:
        return AxisGrid(self.width, self.tile_size, self.stride)

    @property
    def n_tiles(self) -> int:
        return self.rows.n * self.cols.n

    def tiles(self) -> list[Tile]:
        return [
            Tile(r, c, self.rows.start(r), self.cols.start(c))
            for r in range(self.rows.n)
            for c in range(self.cols.n)
        ]

    def tiles_per_block(self, chunk_size: int) -> int:
        """Whole tiles per block side for a requested chunk size in pixels."""
        return max(1, round(chunk_size / self.stride))

    def blocks(self, chunk_size: int) -> list[list[Block]]:
        """Blocks in row-major order, as a list of block rows."""
        k = self.tiles_per_block(chunk_size)
        row_spans, col_spans = _spans(self.rows, k), _spans(self.cols, k)
        return [[Block(i, j, rs, cs) for j, cs in enumerate(col_spans)] for i, rs in enumerate(row_spans)]

    def block_tiles(self, block: Block) -> list[Tile]:
        return [
            Tile(r, c, self.rows.start(r), self.cols.start(c))
            for r in range(block.rows.first_tile, block.rows.stop_tile)
            for c in range(block.cols.first_tile, block.cols.stop_tile)
        ]


def pad_tile(arr: np.ndarray, size: int) -> np.ndarray:
    """Pad a ``(..., h, w)`` tile to ``size x size`` by reflection at its far edges.

    Only the tile's own pixels are reflected, so the result is the same
    whichever block the tile is cut from.
    """
    h, w = arr.shape[-2:]
    if h == size and w == size:
        return arr
    pad = [(0, 0)] * (arr.ndim - 2) + [(0, size - h), (0, size - w)]
    mode = "reflect" if min(h, w) > 1 else "edge"
    return np.pad(arr, pad, mode=mode)


@dataclass(frozen=True)
class Chunk:
    """A plain rectangular chunk of a raster, for per-pixel work (vectorize, evaluate)."""

    i: int
    j: int
    window: Window


def chunk_grid(height: int, width: int, chunk_size: int, align: int = 512) -> list[list[Chunk]]:
    """Row-major chunks of about ``chunk_size`` pixels, aligned to ``align`` (the output block size)."""
    step = max(align, (chunk_size // align) * align) if chunk_size >= align else max(1, chunk_size)
    return [
        [Chunk(i, j, Window(x, y, min(step, width - x), min(step, height - y)))
         for j, x in enumerate(range(0, width, step))]
        for i, y in enumerate(range(0, height, step))
    ]
