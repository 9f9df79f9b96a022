"""Objects found tile by tile, made whole across tiles: ownership by tile cores, then a mask-IoS merge.

Used by every path that finds objects per tile (Mask R-CNN bundles in :mod:`geoseg.instances.tiled`,
object channels decoded in :mod:`geoseg.inference.semantic`). The rule (README "Instances across tiles"):

1. Every tile of the global grid has a *core*: the tile minus half the overlap on each side that
   has a neighbour. The cores partition the scene.
2. An object is kept only by the tile whose core contains the centre of its mask's bounding box
   (clipped to the scene). An object no larger than the overlap lies wholly inside the tile that
   owns it, so it is found whole, once; every other tile that sees it (whole or cut) drops it.
3. A kept object that touches an inner edge of its tile was cut by that tile (an object larger
   than the overlap). It is merged with the kept objects of the neighbouring tiles whose masks
   cover the same pixels of the band the two tiles share: intersection over the smaller of the two
   masks in that band at least ``ios_threshold`` (mask IoS, never box IoU; decoded object channels
   use the masks' IoU in that band), same class. Merges chain.

Limits: an object larger than the overlap is complete only if every tile it crosses finds its part
there; two different objects of one class that touch inside a shared band and are both cut by it
can be merged. Masks are kept cropped to their boxes; nothing is ever scene-sized. Because every
decision is made per tile of the global grid, the result does not depend on chunks or workers.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np

from geoseg.inference.tiling import TileGrid


@dataclass
class CroppedMask:
    """An object's mask cropped to its box, in scene pixels: ``mask`` covers rows y0.. and columns x0.."""

    y0: int
    x0: int
    mask: np.ndarray
    label: int
    score: float

    @property
    def y1(self) -> int:
        return self.y0 + self.mask.shape[0]

    @property
    def x1(self) -> int:
        return self.x0 + self.mask.shape[1]


@dataclass
class Piece(CroppedMask):
    """A detection kept by its tile."""

    tile: tuple[int, int]
    cut: bool  # touches an inner edge of its tile: part of an object larger than the overlap

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


def tile_piece(grid: TileGrid, row: int, col: int, ty0: int, tx0: int, mask: np.ndarray, label: int,
               score: float) -> Piece | None:
    """The piece of an object that tile ``(row, col)`` found at tile pixels ``(ty0, tx0)`` (``mask``
    cropped to its box, clipped to the scene's valid pixels), or None when another tile owns it."""
    cy0, cy1, cx0, cx1 = core(grid, row, col)
    ty, tx = grid.rows.start(row), grid.cols.start(col)
    sy0, sx0 = ty + ty0, tx + tx0  # scene pixels
    cy, cx = sy0 + mask.shape[0] / 2, sx0 + mask.shape[1] / 2
    if not (cy0 <= cy < cy1 and cx0 <= cx < cx1):
        return None
    size = grid.tile_size
    cut = ((row > 0 and ty0 == 0) or (col > 0 and tx0 == 0)
           or (row < grid.rows.n - 1 and ty0 + mask.shape[0] == size)
           or (col < grid.cols.n - 1 and tx0 + mask.shape[1] == size))
    return Piece(int(sy0), int(sx0), np.ascontiguousarray(mask), int(label), float(score), (row, col), bool(cut))


def pack_pieces(pieces: list[Piece]) -> tuple[np.ndarray, np.ndarray]:
    """Pieces as two arrays (for a chunk store): a float64 table ``(N, 9)`` (y0, x0, height, width,
    label, score, tile row, tile column, cut) and their masks' pixels, row by row, one after another."""
    table = np.array([(p.y0, p.x0, *p.mask.shape, p.label, p.score, *p.tile, p.cut) for p in pieces],
                     dtype=np.float64).reshape(-1, 9)
    masks = np.concatenate([p.mask.ravel() for p in pieces]) if pieces else np.zeros(0, dtype=bool)
    return table, masks.astype(bool, copy=False)


def unpack_pieces(table: np.ndarray | None, masks: np.ndarray | None) -> list[Piece]:
    """The pieces :func:`pack_pieces` packed."""
    if table is None or not len(table):
        return []
    out, at = [], 0
    for y0, x0, h, w, label, score, row, col, cut in table:
        n = int(h) * int(w)
        out.append(Piece(int(y0), int(x0), masks[at : at + n].reshape(int(h), int(w)).copy(), int(label),
                         float(score), (int(row), int(col)), bool(cut)))
        at += n
    return out


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


def _band_overlap(a: Piece, b: Piece, grid: TileGrid, measure: str) -> float:
    """Mask intersection over the smaller mask (``ios``) or over their union (``iou``), both counted in the
    region the two pieces' tiles share."""
    ra, rb = _tile_rect(grid, *a.tile), _tile_rect(grid, *b.tile)
    sy0, sy1, sx0, sx1 = max(ra[0], rb[0]), min(ra[1], rb[1]), max(ra[2], rb[2]), min(ra[3], rb[3])
    na, nb = int(_within(a, sy0, sy1, sx0, sx1).sum()), int(_within(b, sy0, sy1, sx0, sx1).sum())
    if not min(na, nb):
        return 0.0
    y0, y1 = max(sy0, a.y0, b.y0), min(sy1, a.y1, b.y1)
    x0, x1 = max(sx0, a.x0, b.x0), min(sx1, a.x1, b.x1)
    if y0 >= y1 or x0 >= x1:
        return 0.0
    inter = int((_within(a, y0, y1, x0, x1) & _within(b, y0, y1, x0, x1)).sum())
    return inter / min(na, nb) if measure == "ios" else inter / (na + nb - inter)


@dataclass
class Instance(CroppedMask):
    """A finished instance."""

    parts: int  # pieces merged into it (1: found whole by one tile)


def merge_pieces(pieces: list[Piece], grid: TileGrid, ios_threshold: float = 0.5, measure: str = "ios") -> list[Instance]:
    """Join the pieces of objects cut by their tiles (see the module's rule); order: top-left first.

    ``measure``: ``ios`` (Mask R-CNN detections: a tile's mask of a cut object can be loose) or ``iou``
    (decoded object channels: a neighbour's one-pixel sliver at a tile's edge, which the watershed gives
    to the object beside it, must not join the two).
    """
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
                    if _band_overlap(a, b, grid, measure) >= ios_threshold:
                        uf.union(i, j)
    groups: dict[int, list[int]] = {}
    for i in range(len(pieces)):
        groups.setdefault(uf.find(i), []).append(i)
    out, tiles = [], []
    for members in groups.values():
        ps = [pieces[i] for i in members]
        tiles.append(frozenset(p.tile for p in ps))
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
    if measure == "iou":  # decoded objects partition the pixels: a pixel two of them claim goes to one
        out = [q for q in _exclusive(out, tiles, grid) if q.mask.any()]
    # a deterministic order that does not depend on chunks or workers
    # (the masks' CRC32 breaks ties without holding a copy of every mask in the sort keys)
    out.sort(key=lambda q: (q.y0, q.x0, q.y1, q.x1, q.label, -q.score, zlib.crc32(q.mask)))
    return out


def _core_index(k: np.ndarray, half: float, stride: int, n: int) -> np.ndarray:
    """The tile row (or column) whose core holds pixel rows (columns) ``k``."""
    return np.clip(np.floor((k + 0.5 - half) / stride).astype(np.int64), 0, n - 1)


def _exclusive(instances: list[Instance], tiles: list[frozenset], grid: TileGrid) -> list[Instance]:
    """Give each pixel that two instances claim to one of them: to the one made by the tile whose core
    holds the pixel, else to the higher score (then the one found first). Only instances made by
    neighbouring tiles can overlap, so each is compared with those of its tiles' neighbours."""
    by_tile: dict[tuple[int, int], list[int]] = {}
    for i, ts in enumerate(tiles):
        for t in ts:
            by_tile.setdefault(t, []).append(i)
    half, s = grid.overlap / 2, grid.stride
    masks = [q.mask for q in instances]
    own = [False] * len(instances)  # masks are copied the first time a pixel is taken from them

    def writable(k: int) -> np.ndarray:
        if not own[k]:
            masks[k], own[k] = masks[k].copy(), True
        return masks[k]
    box = np.array([(q.y0, q.y1, q.x0, q.x1) for q in instances], dtype=np.int64).reshape(-1, 4)
    for i, a in enumerate(instances):
        near = np.array(sorted({j for (r, c) in tiles[i] for dr in (-1, 0, 1) for dc in (-1, 0, 1)
                                for j in by_tile.get((r + dr, c + dc), ()) if j > i}), dtype=np.int64)
        if len(near):  # the boxes that meet this one's
            nb = box[near]
            near = near[(nb[:, 0] < a.y1) & (nb[:, 1] > a.y0) & (nb[:, 2] < a.x1) & (nb[:, 3] > a.x0)]
        for j in near.tolist():
            b = instances[j]
            y0, y1, x0, x1 = max(a.y0, b.y0), min(a.y1, b.y1), max(a.x0, b.x0), min(a.x1, b.x1)
            ma = masks[i][y0 - a.y0 : y1 - a.y0, x0 - a.x0 : x1 - a.x0]
            mb = masks[j][y0 - b.y0 : y1 - b.y0, x0 - b.x0 : x1 - b.x0]
            both = ma & mb
            if not both.any():
                continue
            yy, xx = np.nonzero(both)
            rows = _core_index(yy + y0, half, s, grid.rows.n)
            cols = _core_index(xx + x0, half, s, grid.cols.n)
            owner = [(int(r), int(c)) for r, c in zip(rows, cols)]
            a_wins = np.array([(t in tiles[i]) > (t in tiles[j]) or ((t in tiles[i]) == (t in tiles[j])
                                                                     and a.score >= b.score) for t in owner])
            if a_wins.any():
                writable(j)[y0 - b.y0 + yy[a_wins], x0 - b.x0 + xx[a_wins]] = False
            if not a_wins.all():
                writable(i)[y0 - a.y0 + yy[~a_wins], x0 - a.x0 + xx[~a_wins]] = False
    return [Instance(q.y0, q.x0, m, q.label, q.score, q.parts) for q, m in zip(instances, masks)]


__all__ = ["Instance", "Piece", "core", "merge_pieces", "pack_pieces", "tile_piece", "unpack_pieces"]
