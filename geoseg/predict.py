"""Tiled, blended, Dask-scheduled prediction of GeoTIFF scenes.

Each scene is cut into blocks of whole tiles of one global tile grid
(:mod:`geoseg.tiling`). Two Dask tasks per block: the first reads its window
and runs its tiles through the model in batches, keeping each pixel's class
where one tile covers it and fixed-point blend votes (:mod:`geoseg.blending`)
in the overlap bands; these tasks depend on nothing, so every worker has
model work from the start. The second adds the votes that the upper and left
blocks' tiles cast into it (``overlap``-wide strips), finishes the block's
chunk and hands its own strips on, so no tile runs twice and the cheap
finishing tasks run as a wavefront. Chunks are written as they finish, and
memory depends on the chunk size, not on the scene size.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from geoseg.blending import check_blend, scaled_tile_weights
from geoseg.bundle import check_tiling, load_bundle, read_meta
from geoseg.classes import NODATA, ClassList
from geoseg.errors import GeosegError
from geoseg.inference import get_predictor
from geoseg.inputs import output_stem, resolve_inputs
from geoseg.output import ChunkWriter, decorate_classes, decorate_probabilities
from geoseg.raster import SceneInfo, gdal_cache, inspect_scene, read_window
from geoseg.scheduler import Runner, open_runner, progress_bar, run_graph
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
    batch_size: int | None = None  # default: 8 on CUDA, 1 on the CPU (batching buys nothing there)
    probabilities: bool = False
    overviews: str = "nearest"  # resampling of the class COG's overviews: nearest or mode
    overwrite: bool = False
    allow_no_crs: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        check_blend(self.blend)
        if self.chunk_size < 1:
            raise GeosegError(f"--chunk-size must be positive, got {self.chunk_size}")
        if self.batch_size is not None and self.batch_size < 1:
            raise GeosegError(f"--batch-size must be positive, got {self.batch_size}")
        if self.workers is not None and self.workers < 1:
            raise GeosegError(f"--workers must be positive, got {self.workers}")
        if self.overviews not in ("nearest", "mode"):
            raise GeosegError(f"--overviews must be nearest or mode, got {self.overviews!r}")


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
    return scaled_tile_weights(job.blend, g.tile_size, g.overlap, row == 0, row == g.rows.n - 1,
                               col == 0, col == g.cols.n - 1)


def _overlap_bands(job: SceneJob, span, limit: int) -> list[tuple[int, int]]:
    """Block-relative ``[a, b)`` ranges along one axis where two tiles of the grid overlap."""
    ov, stride = job.grid.overlap, job.grid.stride
    if not ov:
        return []
    bands = []
    for k in range(max(span.first_tile, 1), span.stop_tile):
        a = k * stride - span.start
        b = min(a + ov, limit)
        if a < b:
            bands.append((a, b))
    return bands


@dataclass
class BlockVotes:
    """A block's own tiles, run: classes where one tile decides, votes in the overlap bands."""

    acc: np.ndarray = field(repr=False)  # (K[+1], bh, bw) int32 fixed-point votes (and weights)
    classes: np.ndarray = field(repr=False)
    probabilities: np.ndarray | None = field(repr=False)
    valid: np.ndarray = field(repr=False)
    n_tiles: int = 0


def infer_block(job: SceneJob, block: Block) -> BlockVotes:
    """Read one block and run its tiles through the model (a Dask task with no dependencies).

    Where a pixel is covered by one tile only, its blended votes are that tile's
    votes, so its class is taken from the tile's argmax (done on the device).
    Votes are kept, and argmaxed by :func:`finish_block`, only in the overlap
    bands between tiles. Both give exactly what summing every vote would.
    """
    g, k, ov, size = job.grid, job.num_classes, job.grid.overlap, job.grid.tile_size
    data, valid = read_window(job.scene, block.read_window, job.bands)  # native dtype
    mean = np.asarray(job.mean, dtype=np.float32)[:, None, None]
    scale = (1.0 / np.asarray(job.std, dtype=np.float32))[:, None, None]

    bh, bw = block.rows.size, block.cols.size
    nacc = k + 1 if job.probabilities else k  # the weight total is needed for probabilities only
    acc = np.zeros((nacc, bh, bw), dtype=np.int32)  # calloc: only the touched bands take memory
    classes = np.full((bh, bw), NODATA, dtype=np.uint8)
    probs = np.zeros((k, bh, bw), dtype=np.uint8) if job.probabilities else None

    todo = []
    for t in g.block_tiles(block):
        y, x = t.y - block.rows.start, t.x - block.cols.start
        h, w = min(size, bh - y), min(size, bw - x)
        if valid[y : y + h, x : x + w].any():  # all-nodata tiles never reach the model
            todo.append((t, y, x, h, w))

    if todo:
        predictor = get_predictor(job.bundle, job.device)
        if job.torch_threads:
            import torch

            if torch.get_num_threads() != job.torch_threads:
                torch.set_num_threads(job.torch_threads)
        batch_arr = np.empty((min(job.batch_size, len(todo)), len(job.bands), size, size), dtype=np.float32)
        for b0 in range(0, len(todo), job.batch_size):
            batch = todo[b0 : b0 + job.batch_size]
            for n, (_, y, x, h, w) in enumerate(batch):
                tile = batch_arr[n, :, :h, :w]
                np.subtract(data[:, y : y + h, x : x + w], mean, out=tile, dtype=np.float32)
                tile *= scale
                tile_valid = valid[y : y + h, x : x + w]
                if not tile_valid.all():
                    tile[:, ~tile_valid] = 0.0  # nodata pixels enter the model as the band mean
                if h < size or w < size:
                    batch_arr[n] = pad_tile(tile.copy(), size)
            weights = np.stack([_scaled_weights(job, t.row, t.col) for t, *_ in batch])
            votes, tile_classes = predictor.votes(batch_arr[: len(batch)], weights,
                                                  ring=None if probs is not None else ov)
            for n, (t, y, x, h, w) in enumerate(batch):
                # the tile's exclusive part: away from the overlaps with its neighbours
                ey0, ex0 = (ov if t.row > 0 else 0), (ov if t.col > 0 else 0)
                ey1 = min(h, size - ov if t.row < g.rows.n - 1 else size)
                ex1 = min(w, size - ov if t.col < g.cols.n - 1 else size)
                classes[y + ey0 : y + ey1, x + ex0 : x + ex1] = tile_classes[n, ey0:ey1, ex0:ex1]
                if probs is not None:
                    wq = np.rint(weights[n, ey0:ey1, ex0:ex1])
                    probs[:, y + ey0 : y + ey1, x + ex0 : x + ex1] = np.rint(
                        np.moveaxis(votes[n, ey0:ey1, ex0:ex1], -1, 0) * (255.0 / wq)).astype(np.uint8)
                # the overlap bands: top, bottom, then left and right between them
                for r0, r1, c0, c1 in ((0, ey0, 0, w), (ey1, h, 0, w), (ey0, ey1, 0, ex0), (ey0, ey1, ex1, w)):
                    if r0 < r1 and c0 < c1:
                        acc[:k, y + r0 : y + r1, x + c0 : x + c1] += np.moveaxis(votes[n, r0:r1, c0:c1], -1, 0)
                        if probs is not None:
                            acc[k, y + r0 : y + r1, x + c0 : x + c1] += np.rint(
                                weights[n, r0:r1, c0:c1]).astype(np.int32)

    return BlockVotes(acc, classes, probs, valid, block.n_tiles)


def finish_block(job: SceneJob, block: Block, votes: BlockVotes, top: np.ndarray | None,
                 left: np.ndarray | None) -> BlockResult:
    """Add the votes the upper and left blocks cast into this one, and finish its chunk.

    Votes are fixed-point integers, so the order of these sums does not matter:
    the result is bit-identical however the tasks were scheduled.
    """
    k, acc, classes, probs, valid = job.num_classes, votes.acc, votes.classes, votes.probabilities, votes.valid
    bh, bw = block.rows.size, block.cols.size
    if top is not None:
        acc[:, : top.shape[1], : top.shape[2]] += top
    if left is not None:
        acc[:, :, : left.shape[2]] += left
    fh, fw = block.rows.final_size, block.cols.final_size
    bands = [(np.s_[a:b], np.s_[:fw]) for a, b in _overlap_bands(job, block.rows, fh)]
    bands += [(np.s_[:fh], np.s_[a:b]) for a, b in _overlap_bands(job, block.cols, fw)]
    for rows, cols in bands:
        part = acc[:, rows, cols]
        classes[rows, cols] = np.argmax(part[:k], axis=0)
        if probs is not None:
            probs[:, rows, cols] = np.rint(part[:k] * (255.0 / np.maximum(part[k], 1))).astype(np.uint8)
    nodata = ~valid[:fh, :fw]
    classes = classes[:fh, :fw]
    classes[nodata] = NODATA
    if probs is not None:
        probs = probs[:, :fh, :fw]
        probs[:, nodata] = 0
    bottom = acc[:, fh:, :fw].copy() if fh < bh else None
    right = acc[:, :, fw:].copy() if fw < bw else None
    return BlockResult(classes, probs, bottom, right, votes.n_tiles)


def default_batch_size(device: str) -> int:
    from geoseg.inference import resolve_device

    # On the CPU a batch buys nothing (measured: batch 1 or 2 per forward take the same time per
    # tile), and each concurrent worker's activations cost memory.
    return 8 if resolve_device(device).type == "cuda" else 1


def _strip(result: BlockResult, side: str) -> np.ndarray | None:
    return getattr(result, side)


def block_graph(job: SceneJob, blocks: list[list[Block]]) -> list[tuple[Block, object]]:
    """Delayed block results: model tasks, and finishing tasks that take their neighbours' strips."""
    import dask
    from dask.base import tokenize

    token = tokenize(job)
    delayed_infer = dask.delayed(infer_block, pure=True)
    delayed_finish = dask.delayed(finish_block, pure=True)
    delayed_strip = dask.delayed(_strip, pure=True)
    results: dict[tuple[int, int], object] = {}
    out = []
    for row in blocks:
        for b in row:
            up, lf = results.get((b.i - 1, b.j)), results.get((b.i, b.j - 1))
            top = None if up is None else delayed_strip(up, "bottom", dask_key_name=f"bottom-{token}-{b.i - 1}-{b.j}")
            left = None if lf is None else delayed_strip(lf, "right", dask_key_name=f"right-{token}-{b.i}-{b.j - 1}")
            votes = delayed_infer(job, b, dask_key_name=f"infer-{token}-{b.i}-{b.j}")
            res = delayed_finish(job, b, votes, top, left, dask_key_name=f"block-{token}-{b.i}-{b.j}")
            results[(b.i, b.j)] = res
            out.append((b, res))
    return out


@dataclass
class SceneOutputs:
    scene: str
    classes: Path
    probabilities: Path | None


def output_paths(out_dir: Path, scene: str | os.PathLike, probabilities: bool) -> SceneOutputs:
    stem = output_stem(scene)
    return SceneOutputs(os.fspath(scene), out_dir / f"{stem}.classes.tif",
                        out_dir / f"{stem}.probs.tif" if probabilities else None)


def predict_scene(info: SceneInfo, bundle: str | os.PathLike, classes: ClassList, out: SceneOutputs,
                  options: PredictOptions, runner: Runner, tile_size: int, overlap: int,
                  bands: tuple[int, ...], mean: tuple[float, ...], std: tuple[float, ...]) -> SceneOutputs:
    """Predict one checked scene into ``out``; nothing is left behind on failure."""
    grid = TileGrid(info.height, info.width, tile_size, overlap)
    job = SceneJob(
        scene=info, bundle=str(Path(bundle).resolve()), bands=bands, mean=mean, std=std,
        num_classes=len(classes), grid=grid, blend=check_blend(options.blend), device=options.device,
        batch_size=options.batch_size or default_batch_size(options.device),
        probabilities=options.probabilities,
        torch_threads=runner.torch_threads,
    )
    graph = block_graph(job, grid.blocks(options.chunk_size))
    writers = [ChunkWriter(out.classes, info, 1, NODATA, colormap=classes.colormap())]
    if out.probabilities:
        writers.append(ChunkWriter(out.probabilities, info, len(classes), None))
    bar = progress_bar(grid.n_tiles, Path(info.path).name, options.progress, unit="tile")

    def sink(block: Block, result: BlockResult) -> None:
        win = block.final_window
        writers[0].write(result.classes, win)
        if out.probabilities:
            writers[1].write(result.probabilities, win)
        bar.update(result.n_tiles)

    try:
        run_graph(graph, sink, runner)
        bar.close()
        writers[0].finish_cog(decorate_classes(classes), options.overviews.upper())
        if out.probabilities:
            writers[1].finish_cog(decorate_probabilities(classes), "AVERAGE")
    except BaseException:
        bar.close()
        for w in writers:
            w.discard()
        raise
    return out


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
    import torch

    threads = torch.get_num_threads()  # local workers set their share; the caller's setting comes back
    with open_runner(options.scheduler, options.workers, client) as runner, _restore_torch_threads(threads), \
            gdal_cache():
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


@contextlib.contextmanager
def _restore_torch_threads(n: int):
    import torch

    try:
        yield
    finally:
        torch.set_num_threads(n)


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
