"""Tiled, blended, Dask-scheduled prediction of GeoTIFF scenes.

Each scene is cut into blocks of whole tiles of one global tile grid
(:mod:`geoseg.tiling`). One Dask task per block reads its window, runs its
tiles through the model in batches, and accumulates fixed-point blend votes
(:mod:`geoseg.blending`). The votes a block's tiles cast into the next
blocks' pixels (an ``overlap``-wide strip on the right and at the bottom)
are handed to those tasks, so tasks run as a wavefront and no tile runs
twice. Each task returns the classes of the part of the scene it completes;
these are written chunk by chunk, and memory depends on the chunk size, not
on the scene size.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from geoseg.blending import SCALE, check_blend, tile_weights
from geoseg.bundle import check_tiling, load_bundle, read_meta
from geoseg.classes import NODATA, ClassList
from geoseg.errors import GeosegError
from geoseg.inference import get_predictor
from geoseg.inputs import output_stem, resolve_inputs
from geoseg.output import ChunkWriter, decorate_classes, decorate_probabilities
from geoseg.raster import SceneInfo, inspect_scene, read_window
from geoseg.scheduler import Runner, open_runner
from geoseg.tiling import Block, TileGrid, pad_tile

log = logging.getLogger("geoseg")


@dataclass(frozen=True)
class PredictOptions:
    """Options shared by every command that runs a model over rasters."""

    tile_size: int | None = None  # default: the bundle's
    overlap: int | None = None  # default: the bundle's
    blend: str = "cosine"
    chunk_size: int = 2048
    workers: int | None = None
    scheduler: str | None = None
    device: str = "auto"
    batch_size: int = 4
    probabilities: bool = False
    overwrite: bool = False
    allow_no_crs: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        check_blend(self.blend)
        if self.chunk_size < 1:
            raise GeosegError(f"--chunk-size must be positive, got {self.chunk_size}")
        if self.batch_size < 1:
            raise GeosegError(f"--batch-size must be positive, got {self.batch_size}")
        if self.workers is not None and self.workers < 1:
            raise GeosegError(f"--workers must be positive, got {self.workers}")


@dataclass(frozen=True)
class SceneJob:
    """Everything a block task needs; small and picklable."""

    scene: SceneInfo
    bundle: str
    bands: tuple[int, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_classes: int
    grid: TileGrid
    blend: str
    device: str
    batch_size: int
    probabilities: bool
    torch_threads: int | None = None


@dataclass
class BlockResult:
    """A finished chunk and the votes its tiles cast into later blocks."""

    classes: np.ndarray
    probabilities: np.ndarray | None
    bottom: np.ndarray | None = field(repr=False)
    right: np.ndarray | None = field(repr=False)
    n_tiles: int = 0


def _scaled_weights(job: SceneJob, row: int, col: int) -> np.ndarray:
    g = job.grid
    return tile_weights(job.blend, g.tile_size, g.overlap, row == 0, row == g.rows.n - 1,
                        col == 0, col == g.cols.n - 1) * np.float32(SCALE)


def run_block(job: SceneJob, block: Block, top: np.ndarray | None, left: np.ndarray | None) -> BlockResult:
    """Predict one block: read, run its tiles, blend, and finish its chunk."""
    g, k = job.grid, job.num_classes
    data, valid = read_window(job.scene, block.read_window, job.bands)
    mean = np.asarray(job.mean, dtype=np.float32)[:, None, None]
    std = np.asarray(job.std, dtype=np.float32)[:, None, None]
    data -= mean
    data /= std
    data[:, ~valid] = 0.0

    acc = np.zeros((k + 1, block.rows.size, block.cols.size), dtype=np.int32)
    if top is not None:
        acc[:, : top.shape[1], : top.shape[2]] += top
    if left is not None:
        acc[:, :, : left.shape[2]] += left

    todo = []
    for t in g.block_tiles(block):
        y, x = t.y - block.rows.start, t.x - block.cols.start
        h, w = min(g.tile_size, g.height - t.y), min(g.tile_size, g.width - t.x)
        if valid[y : y + h, x : x + w].any():  # all-nodata tiles never reach the model
            todo.append((t, y, x, h, w))

    if todo:
        predictor = get_predictor(job.bundle, job.device)
        if job.torch_threads:
            import torch

            torch.set_num_threads(job.torch_threads)
        for b0 in range(0, len(todo), job.batch_size):
            batch = todo[b0 : b0 + job.batch_size]
            tiles = np.stack([pad_tile(data[:, y : y + h, x : x + w], g.tile_size) for _, y, x, h, w in batch])
            weights = np.stack([_scaled_weights(job, t.row, t.col) for t, *_ in batch])
            votes = predictor.votes(tiles, weights)
            for n, (_, y, x, h, w) in enumerate(batch):
                acc[:k, y : y + h, x : x + w] += votes[n, :, :h, :w]
                acc[k, y : y + h, x : x + w] += np.rint(weights[n, :h, :w]).astype(np.int32)

    fh, fw = block.rows.final_size, block.cols.final_size
    final = acc[:, :fh, :fw]
    nodata = ~valid[:fh, :fw]
    classes = np.argmax(final[:k], axis=0).astype(np.uint8)
    classes[nodata] = NODATA
    probs = None
    if job.probabilities:
        total = np.maximum(final[k], 1).astype(np.float64)
        probs = np.rint(final[:k] * (255.0 / total)).astype(np.uint8)
        probs[:, nodata] = 0
    bottom = acc[:, fh:, :fw].copy() if fh < acc.shape[1] else None
    right = acc[:, :, fw:].copy() if fw < acc.shape[2] else None
    return BlockResult(classes, probs, bottom, right, block.n_tiles)


def _strip(result: BlockResult, side: str) -> np.ndarray | None:
    return getattr(result, side)


def block_graph(job: SceneJob, blocks: list[list[Block]]) -> list[tuple[Block, object]]:
    """Delayed block results, each depending on its upper and left neighbours' strips."""
    import dask
    from dask.base import tokenize

    token = tokenize(job)
    delayed_block = dask.delayed(run_block, pure=True)
    delayed_strip = dask.delayed(_strip, pure=True)
    results: dict[tuple[int, int], object] = {}
    out = []
    for row in blocks:
        for b in row:
            up, lf = results.get((b.i - 1, b.j)), results.get((b.i, b.j - 1))
            top = None if up is None else delayed_strip(up, "bottom", dask_key_name=f"bottom-{token}-{b.i - 1}-{b.j}")
            left = None if lf is None else delayed_strip(lf, "right", dask_key_name=f"right-{token}-{b.i}-{b.j - 1}")
            res = delayed_block(job, b, top, left, dask_key_name=f"block-{token}-{b.i}-{b.j}")
            results[(b.i, b.j)] = res
            out.append((b, res))
    return out


@dataclass
class SceneOutputs:
    classes: Path
    probabilities: Path | None


def output_paths(out_dir: Path, scene: str | os.PathLike, probabilities: bool) -> SceneOutputs:
    stem = output_stem(scene)
    return SceneOutputs(out_dir / f"{stem}.classes.tif", out_dir / f"{stem}.probs.tif" if probabilities else None)


def predict_scene(info: SceneInfo, bundle: str | os.PathLike, classes: ClassList, out: SceneOutputs,
                  options: PredictOptions, runner: Runner, tile_size: int, overlap: int,
                  bands: tuple[int, ...], mean: tuple[float, ...], std: tuple[float, ...]) -> SceneOutputs:
    """Predict one checked scene into ``out``; nothing is left behind on failure."""
    grid = TileGrid(info.height, info.width, tile_size, overlap)
    job = SceneJob(
        scene=info, bundle=str(Path(bundle).resolve()), bands=bands, mean=mean, std=std,
        num_classes=len(classes), grid=grid, blend=check_blend(options.blend), device=options.device,
        batch_size=options.batch_size, probabilities=options.probabilities,
        torch_threads=runner.torch_threads,
    )
    graph = block_graph(job, grid.blocks(options.chunk_size))
    writers = [ChunkWriter(out.classes, info, 1, NODATA)]
    if out.probabilities:
        writers.append(ChunkWriter(out.probabilities, info, len(classes), None))
    bar = _progress(grid.n_tiles, Path(info.path).name, options.progress)

    def sink(block: Block, result: BlockResult) -> None:
        win = block.final_window
        writers[0].write(result.classes, win)
        if out.probabilities:
            writers[1].write(result.probabilities, win)
        bar.update(result.n_tiles)

    try:
        _execute(graph, sink, runner)
        bar.close()
        writers[0].finish_cog(decorate_classes(classes), "MODE")
        if out.probabilities:
            writers[1].finish_cog(decorate_probabilities(classes), "AVERAGE")
    except BaseException:
        bar.close()
        for w in writers:
            w.discard()
        raise
    return out


def _execute(graph: list[tuple[Block, object]], sink, runner: Runner) -> None:
    import dask

    if runner.client is None:
        # Local scheduler: writes are tasks of the graph, so finished chunks leave memory at once.
        writes = [dask.delayed(sink, pure=False)(b, res) for b, res in graph]
        dask.compute(*writes, scheduler=runner.scheduler, num_workers=runner.workers)
        return
    from distributed import as_completed

    client = runner.client
    futures = client.compute([res for _, res in graph])
    by_key = {f.key: b for f, (b, _) in zip(futures, graph)}
    try:
        for fut in as_completed(futures):
            sink(by_key[fut.key], fut.result())
            fut.release()
    finally:
        client.cancel(futures)


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, name: str, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, desc=name, unit="tile", file=sys.stderr, leave=False, dynamic_ncols=True)


def predict(bundle: str | os.PathLike, inputs: list[str] | str, out_dir: str | os.PathLike,
            options: PredictOptions | None = None, client: object | None = None) -> list[SceneOutputs]:
    """Predict every scene of ``inputs`` (files, folders or globs) into ``out_dir``.

    Returns the outputs written (scenes skipped because their outputs exist are
    included). Every scene is checked before any is processed.
    """
    options = options or PredictOptions()
    meta = read_meta(bundle)
    tile = options.tile_size or meta.tile_size
    overlap = meta.overlap if options.overlap is None else options.overlap
    check_tiling(tile, overlap)
    scenes = resolve_inputs(inputs)
    infos = [inspect_scene(s, meta.bands, options.allow_no_crs) for s in scenes]
    out_dir = prepare_out_dir(out_dir)
    _check_unique_stems(scenes)

    done = []
    with open_runner(options.scheduler, options.workers, client) as runner:
        # Load the weights here first: a broken bundle fails before any scene is touched, and
        # local schedulers then reuse this process's predictor.
        if runner.distributed:
            load_bundle(bundle)
        else:
            get_predictor(bundle, options.device)
        for info in infos:
            out = output_paths(out_dir, info.path, options.probabilities)
            targets = [p for p in (out.classes, out.probabilities) if p is not None]
            if not options.overwrite and all(p.exists() for p in targets):
                log.info("%s: outputs exist, skipped (pass --overwrite to redo)", info.path)
                done.append(out)
                continue
            log.info("%s: %dx%d px -> %s", info.path, info.width, info.height, out.classes)
            predict_scene(info, bundle, meta.classes, out, options, runner, tile, overlap,
                          meta.bands, meta.mean, meta.std)
            done.append(out)
    return done


def prepare_out_dir(out_dir: str | os.PathLike) -> Path:
    """Create the output directory and check it is writable, before any work."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".geoseg-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise GeosegError(f"output directory is not writable ({exc.strerror or exc})", out) from None
    return out


def _check_unique_stems(scenes: list[str]) -> None:
    seen: dict[str, str] = {}
    for s in scenes:
        stem = output_stem(s)
        if stem in seen:
            raise GeosegError(f"has the same output name {stem!r} as {seen[stem]}; predict them into different folders", s)
        seen[stem] = s
