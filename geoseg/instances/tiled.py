"""Tiled Mask R-CNN prediction: each tile's detections, kept by the tile that owns them.

Which tile keeps a detection, and how detections of objects cut by tiles are joined, is
:mod:`geoseg.inference.pieces`' rule (README "Instances across tiles"), shared with the object
channels of semantic bundles and ``vectorize --split-touching``: Mask R-CNN detections are merged
by mask IoS in the band two tiles share.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from geoseg.inference.pieces import Piece, tile_piece
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
                p = tile_piece(g, t.row, t.col, d.y0 + rows[0], d.x0 + cols[0], m, d.label, d.score)
                if p is not None:
                    pieces.append(p)
    return pieces
