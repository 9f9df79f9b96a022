"""Tiled instance prediction: ownership by tile cores, then a mask-IoS merge across core boundaries.

The rule (README "Instances across tiles"):

1. Every tile of the global grid has a *core*: the tile minus half the overlap on each side that
   has a neighbour. The cores partition the scene.
2. A detection is kept only by the tile whose core contains the centre of its mask's bounding box
   (clipped to the scene). An object no larger than the overlap lies wholly inside the tile that
   owns it, so it is found whole, once; every other tile that sees it (whole or cut) drops it.
3. A kept detection that touches an inner edge of its tile was cut by that tile (an object larger
   than the overlap). It is merged with the kept detections of the neighbouring tiles whose masks
   cover the same pixels of the band the two tiles share: intersection over the smaller of the two
   masks in that band at least ``ios_threshold`` (mask IoS, never box IoU), same class. Merges chain.

Limits: an object larger than the overlap is complete only if every tile it crosses finds its part
there; two different objects of one class that touch inside a shared band and are both cut by it
can be merged. Masks are kept cropped to their boxes; nothing is ever scene-sized.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from geoseg.inference.tiling import Block, TileGrid
from geoseg.io.raster import SceneInfo, read_window


@dataclass(frozen=True)
class InstanceJob:
    """Everything a block task needs; small and picklable."""

    scene: SceneInfo
    bundle: str
    bands: tuple[int, ...]
    mean: tuple[float, ...]
    grid: TileGrid
    device: str
    batch_size: int
    score_threshold: float
    mask_threshold: float
    torch_threads: int | None = None


@dataclass
class Piece:
    """A detection kept by its tile, in scene pixels: ``mask`` covers rows y0.. and columns x0.."""

    y0: int
    x0: int
    mask: np.ndarray
    label: int
    score: float
    tile: tuple[int, int]
    cut: bool  # touches an inner edge of its tile: part of an object larger than the overlap

    @property
    def y1(self) -> int:
        return self.y0 + self.mask.shape[0]

    @property
    def x1(self) -> int:
        return self.x0 + self.mask.shape[1]

    @property
    def area(self) -> int:
        return int(self.mask.sum())


def core(grid: TileGrid, row: int, col: int) -> tuple[float, float, float, float]:
    """A tile's core ``[y0, y1) x [x0, x1)`` (infinite on scene edges, so every centre has an owner)."""
    half, s = grid.overlap / 2, grid.stride

    def axis(k: int, n: int) -> tuple[float, float]:
        return (k * s + half if k > 0 else -math.inf, (k + 1) * s + half if k < n - 1 else math.inf)

    (y0, y1), (x0, x1) = axis(row, grid.rows.n), axis(col, grid.cols.n)
    return y0, y1, x0, x1


def _tile_input(data: np.ndarray, valid: np.ndarray, mean: np.ndarray, y: int, x: int, h: int, w: int,
                size: int) -> np.ndarray:
    """A raw ``(C, size, size)`` float32 tile: nodata and the part past the scene edge hold the band mean."""
    out = np.empty((data.shape[0], size, size), dtype=np.float32)
    out[:] = mean[:, None, None]
    part = data[:, y : y + h, x : x + w].astype(np.float32)
    v = valid[y : y + h, x : x + w]
    out[:, :h, :w] = np.where(v, part, mean[:, None, None])
    return out


def infer_block(job: InstanceJob, block: Block) -> list[Piece]:
    """Run one block's tiles and keep the detections each tile owns (a Dask task)."""
    from geoseg.instances.predictor import get_instance_predictor

    g, size = job.grid, job.grid.tile_size
    data, valid = read_window(job.scene, block.read_window, job.bands)
    mean = np.asarray(job.mean, dtype=np.float32)
    bh, bw = block.rows.size, block.cols.size
    todo = []
    for t in g.block_tiles(block):
        y, x = t.y - block.rows.start, t.x - block.cols.start
        h, w = min(size, bh - y), min(size, bw - x)
        if valid[y : y + h, x : x + w].any():
            todo.append((t, y, x, h, w))
    pieces: list[Piece] = []
    if not todo:
        return pieces
    predictor = get_instance_predictor(job.bundle, job.device)
    if job.torch_threads:
        import torch

        if torch.get_num_threads() != job.torch_threads:
            torch.set_num_threads(job.torch_threads)
    for b0 in range(0, len(todo), job.batch_size):
        batch = todo[b0 : b0 + job.batch_size]
        tiles = np.stack([_tile_input(data, valid, mean, y, x, h, w, size) for _, y, x, h, w in batch])
        found = predictor.detect(tiles, job.mask_threshold)
        for (t, y, x, h, w), dets in zip(batch, found):
            cy0, cy1, cx0, cx1 = core(g, t.row, t.col)
            for d in dets:
                if d.score < job.score_threshold:
                    continue
                # clip to the scene's valid pixels inside this tile
                m = d.mask[: max(0, min(d.mask.shape[0], h - d.y0)), : max(0, min(d.mask.shape[1], w - d.x0))]
                if not m.size:
                    continue
                m = m & valid[y + d.y0 : y + d.y0 + m.shape[0], x + d.x0 : x + d.x0 + m.shape[1]]
                rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
                if not rows.size:
                    continue
                m = m[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
                ty0, tx0 = d.y0 + rows[0], d.x0 + cols[0]  # tile pixels
                sy0, sx0 = t.y + ty0, t.x + tx0  # scene pixels
                cy, cx = sy0 + m.shape[0] / 2, sx0 + m.shape[1] / 2
                if not (cy0 <= cy < cy1 and cx0 <= cx < cx1):
                    continue  # another tile owns it
                cut = ((t.row > 0 and ty0 == 0) or (t.col > 0 and tx0 == 0)
                       or (t.row < g.rows.n - 1 and ty0 + m.shape[0] == size)
                       or (t.col < g.cols.n - 1 and tx0 + m.shape[1] == size))
                pieces.append(Piece(int(sy0), int(sx0), np.ascontiguousarray(m), int(d.label), float(d.score),
                                    (t.row, t.col), bool(cut)))
    return pieces


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        a, b = self.find(a), self.find(b)
        if a != b:
            self.parent[max(a, b)] = min(a, b)


def _tile_rect(grid: TileGrid, row: int, col: int) -> tuple[int, int, int, int]:
    y, x = grid.rows.start(row), grid.cols.start(col)
    return y, min(y + grid.tile_size, grid.height), x, min(x + grid.tile_size, grid.width)


def _within(p: Piece, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """The part of ``p``'s mask inside a region (scene pixels), aligned to the region's clipped box."""
    ya, yb, xa, xb = max(y0, p.y0), min(y1, p.y1), max(x0, p.x0), min(x1, p.x1)
    if ya >= yb or xa >= xb:
        return np.zeros((0, 0), dtype=bool)
    return p.mask[ya - p.y0 : yb - p.y0, xa - p.x0 : xb - p.x0]


def _band_ios(a: Piece, b: Piece, grid: TileGrid) -> float:
    """Mask intersection over the smaller mask, both counted in the region the two pieces' tiles share."""
    ra, rb = _tile_rect(grid, *a.tile), _tile_rect(grid, *b.tile)
    sy0, sy1, sx0, sx1 = max(ra[0], rb[0]), min(ra[1], rb[1]), max(ra[2], rb[2]), min(ra[3], rb[3])
    small = min(int(_within(a, sy0, sy1, sx0, sx1).sum()), int(_within(b, sy0, sy1, sx0, sx1).sum()))
    if not small:
        return 0.0
    y0, y1 = max(sy0, a.y0, b.y0), min(sy1, a.y1, b.y1)
    x0, x1 = max(sx0, a.x0, b.x0), min(sx1, a.x1, b.x1)
    if y0 >= y1 or x0 >= x1:
        return 0.0
    return int((_within(a, y0, y1, x0, x1) & _within(b, y0, y1, x0, x1)).sum()) / small


@dataclass
class Instance:
    """A finished instance in scene pixels."""

    y0: int
    x0: int
    mask: np.ndarray
    label: int
    score: float
    parts: int  # pieces merged into it (1: found whole by one tile)

    @property
    def y1(self) -> int:
        return self.y0 + self.mask.shape[0]

    @property
    def x1(self) -> int:
        return self.x0 + self.mask.shape[1]


def merge_pieces(pieces: list[Piece], grid: TileGrid, ios_threshold: float = 0.5) -> list[Instance]:
    """Join the pieces of objects cut by their tiles (see the module's rule); order: top-left first."""
    by_tile: dict[tuple[int, int], list[int]] = {}
    for i, p in enumerate(pieces):
        by_tile.setdefault(p.tile, []).append(i)
    uf = _UnionFind(len(pieces))
    for i, a in enumerate(pieces):
        if not a.cut:
            continue
        r, c = a.tile
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                for j in by_tile.get((r + dr, c + dc), ()) if (dr or dc) else ():
                    b = pieces[j]
                    if b.label != a.label or b.y0 >= a.y1 or a.y0 >= b.y1 or b.x0 >= a.x1 or a.x0 >= b.x1:
                        continue
                    if _band_ios(a, b, grid) >= ios_threshold:
                        uf.union(i, j)
    groups: dict[int, list[int]] = {}
    for i in range(len(pieces)):
        groups.setdefault(uf.find(i), []).append(i)
    out = []
    for members in groups.values():
        ps = [pieces[i] for i in members]
        if len(ps) == 1:
            p = ps[0]
            out.append(Instance(p.y0, p.x0, p.mask, p.label, p.score, 1))
            continue
        y0, x0 = min(p.y0 for p in ps), min(p.x0 for p in ps)
        y1, x1 = max(p.y1 for p in ps), max(p.x1 for p in ps)
        m = np.zeros((y1 - y0, x1 - x0), dtype=bool)
        for p in ps:
            m[p.y0 - y0 : p.y1 - y0, p.x0 - x0 : p.x1 - x0] |= p.mask
        out.append(Instance(y0, x0, m, ps[0].label, max(p.score for p in ps), len(ps)))
    # a deterministic order that does not depend on chunks or workers
    out.sort(key=lambda q: (q.y0, q.x0, q.y1, q.x1, q.label, -q.score, q.mask.tobytes()))
    return out
