"""One scene through a semantic bundle: the block graph, the blend, the class and probability COGs.

Each scene is cut into blocks of whole tiles of one global tile grid
(:mod:`geoseg.inference.tiling`). Two Dask tasks per block: the first reads its window
and runs its tiles through the model in batches, keeping each pixel's class
where one tile covers it and fixed-point blend votes (:mod:`geoseg.inference.blending`)
in the overlap bands; these tasks depend on nothing, so every worker has
model work from the start. The second adds the votes that the upper and left
blocks' tiles cast into it (``overlap``-wide strips), finishes the block's
chunk and hands its own strips on, so no tile runs twice and the cheap
finishing tasks run as a wavefront. Chunks are written as they finish, and
memory depends on the chunk size, not on the scene size.

:func:`geoseg.prediction.predict` checks the scenes and calls :func:`predict_scene` for each.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from geoseg.inference._blend_ext import argmax_votes, fold_tile, normalize

from geoseg.classes import NODATA, ClassList
from geoseg.inference.blending import check_blend, scaled_tile_weights
from geoseg.inference.objects import DecodeSettings, tile_objects
from geoseg.inference.pieces import merge_pieces, pack_pieces, unpack_pieces
from geoseg.inference.predictor import default_batch_size, device_type, get_predictor
from geoseg.inference.scheduler import Runner, progress_bar, run_graph
from geoseg.inference.tiling import Block, TileGrid, chunk_grid, pad_tile
from geoseg.io.checkpoint import ChunkStore, store_key
from geoseg.io.inputs import output_stem
from geoseg.io.output import ChunkWriter, class_sidecars, decorate_classes, decorate_probabilities, write_class_sidecars
from geoseg.io.raster import SceneInfo, read_window

log = logging.getLogger("geoseg")
# pixel types the compiled tile normaliser reads directly (others go through float64)
_PIXEL_TYPES = tuple(np.dtype(t) for t in ("u1", "i1", "u2", "i2", "u4", "i4", "u8", "i8", "f4", "f8"))


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
    engine: str = "torch"
    precision: str = "fp32"
    streams: int = 1  # callers of one engine at a time in a worker process (its Dask threads)
    objects: tuple[int, ...] = ()  # class ids whose object channels follow the class logits
    decode: DecodeSettings | None = None  # their decoding thresholds


@dataclass
class BlockResult:
    """A finished chunk and the votes its tiles cast into later blocks."""

    classes: np.ndarray
    probabilities: np.ndarray | None
    bottom: np.ndarray | None = field(repr=False)
    right: np.ndarray | None = field(repr=False)
    n_tiles: int = 0
    # the objects the block's tiles own (object channels; geoseg.inference.pieces.pack_pieces)
    piece_table: np.ndarray | None = field(default=None, repr=False)
    piece_masks: np.ndarray | None = field(default=None, repr=False)


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
    """A block's own tiles, run: classes where one tile decides, votes in the overlap bands.

    Votes are int32 fixed-point sums (plus, for probabilities, a plane of weight
    totals) kept only where tiles overlap: ``rows`` is block-sized but only its
    horizontal overlap bands are ever touched (the rest is never paged in),
    ``cols`` holds the vertical bands' columns side by side (``slot[x]`` is
    column ``x``'s place there) for the rows outside the horizontal bands.
    """

    rows: np.ndarray = field(repr=False)  # (K[+1], bh, bw)
    cols: np.ndarray = field(repr=False)  # (K[+1], bh, total width of the vertical bands)
    slot: np.ndarray = field(repr=False)  # (bw,) intp, -1 outside the vertical bands
    classes: np.ndarray = field(repr=False)
    probabilities: np.ndarray | None = field(repr=False)
    valid: np.ndarray = field(repr=False)
    n_tiles: int = 0
    pieces: list = field(default_factory=list, repr=False)  # objects the block's tiles own


def _vote_bands(job: SceneJob, span) -> list[tuple[int, int]]:
    """The overlap bands inside a block along one axis, and its margin into the next block."""
    bands = _overlap_bands(job, span, span.final_size)
    return bands + [(span.final_size, span.size)] if span.final_size < span.size else bands


def _gaps(bands: list[tuple[int, int]], size: int) -> list[tuple[int, int]]:
    """The ``[a, b)`` ranges of ``[0, size)`` outside the sorted, disjoint ``bands``."""
    edges = [0, *(e for band in bands for e in band), size]
    return [(a, b) for a, b in zip(edges[::2], edges[1::2]) if a < b]


def infer_block(job: SceneJob, block: Block) -> BlockVotes:
    """Read one block and run its tiles through the model (a Dask task with no dependencies).

    Where a pixel is covered by one tile only, its blended votes are that tile's
    votes, so its class is taken from the tile's argmax. Votes are kept, and
    argmaxed by :func:`finish_block`, only in the overlap bands between tiles.
    Both give exactly what summing every vote would. The per-pixel work around
    the forward pass (normalising, argmax, votes) is compiled
    (``geoseg/inference/_blend_ext.pyx``) and runs without the GIL.
    """
    g, k, ov, size = job.grid, job.num_classes, job.grid.overlap, job.grid.tile_size
    data, valid = read_window(job.scene, block.read_window, job.bands)  # native dtype
    mean = np.asarray(job.mean, dtype=np.float32)
    scale = 1.0 / np.asarray(job.std, dtype=np.float32)

    bh, bw = block.rows.size, block.cols.size
    nacc = k + 1 if job.probabilities else k  # the weight total is needed for probabilities only
    slot = np.full(bw, -1, dtype=np.intp)
    col_bands = _vote_bands(job, block.cols)
    n = 0
    for a, b in col_bands:
        slot[a:b] = np.arange(n, n + b - a)
        n += b - a
    acc_rows = np.zeros((nacc, bh, bw), dtype=np.int32)  # calloc: only the touched bands take memory
    acc_cols = np.zeros((nacc, bh, n), dtype=np.int32)
    classes = np.full((bh, bw), NODATA, dtype=np.uint8)
    probs = np.zeros((k, bh, bw), dtype=np.uint8) if job.probabilities else None

    todo, pieces = [], []
    for t in g.block_tiles(block):
        y, x = t.y - block.rows.start, t.x - block.cols.start
        h, w = min(size, bh - y), min(size, bw - x)
        if valid[y : y + h, x : x + w].any():  # all-nodata tiles never reach the model
            todo.append((t, y, x, h, w))

    if todo:
        predictor = get_predictor(job.bundle, job.device, job.engine, job.precision, size, job.streams,
                                  job.torch_threads)
        if job.torch_threads and job.engine == "torch":
            import torch

            if torch.get_num_threads() != job.torch_threads:
                torch.set_num_threads(job.torch_threads)
        # tiles are normalised straight into channels-last (NHWC) memory, the model's layout
        batch_arr = np.empty((min(job.batch_size, len(todo)), size, size, len(job.bands)), dtype=np.float32)
        valid8 = np.ascontiguousarray(valid).view(np.uint8)
        data = np.ascontiguousarray(data if data.dtype in _PIXEL_TYPES else data.astype(np.float64))
        for b0 in range(0, len(todo), job.batch_size):
            batch = todo[b0 : b0 + job.batch_size]
            for n, (_, y, x, h, w) in enumerate(batch):
                # nodata pixels enter the model as the band mean
                normalize(data, valid8, mean, scale, batch_arr[n], y, x, h, w)
                if h < size or w < size:
                    batch_arr[n] = np.moveaxis(pad_tile(np.moveaxis(batch_arr[n, :h, :w], -1, 0), size), 0, -1)
            logits = predictor.class_logits(batch_arr[: len(batch)])
            for n, (t, y, x, h, w) in enumerate(batch):
                # the tile's exclusive part: away from the overlaps with its neighbours
                ey0, ex0 = (ov if t.row > 0 else 0), (ov if t.col > 0 else 0)
                ey1 = min(h, size - ov if t.row < g.rows.n - 1 else size)
                ex1 = min(w, size - ov if t.col < g.cols.n - 1 else size)
                tile = np.ascontiguousarray(logits[n, :, :, :k]) if job.objects else logits[n]
                fold_tile(tile, _scaled_weights(job, t.row, t.col), y, x, h, w, ey0, ey1, ex0, ex1,
                          classes, acc_rows, acc_cols, slot, probs)
                if job.objects:  # decoded per tile of the global grid: the same for any chunk size
                    pieces += tile_objects(g, t.row, t.col, logits[n, :h, :w, k:], valid[y : y + h, x : x + w],
                                           job.objects, job.decode)

    return BlockVotes(acc_rows, acc_cols, slot, classes, probs, valid, block.n_tiles, pieces)


def finish_block(job: SceneJob, block: Block, votes: BlockVotes, top: np.ndarray | None,
                 left: np.ndarray | None) -> BlockResult:
    """Add the votes the upper and left blocks cast into this one, and finish its chunk.

    Votes are fixed-point integers, so the order of these sums does not matter:
    the result is bit-identical however the tasks were scheduled.
    """
    k, classes, probs, valid = job.num_classes, votes.classes, votes.probabilities, votes.valid
    acc_rows, acc_cols, slot = votes.rows, votes.cols, votes.slot
    bh, bw = block.rows.size, block.cols.size
    fh, fw = block.rows.final_size, block.cols.final_size
    row_bands = _vote_bands(job, block.rows)
    gaps = _gaps(row_bands, bh)
    if top is not None:  # the upper block's bottom margin: this block's first horizontal band
        acc_rows[:, : top.shape[1], : top.shape[2]] += top
    if left is not None:  # the left block's right margin: this block's first vertical band
        lw = left.shape[2]
        for r0, r1 in row_bands:
            acc_rows[:, r0:r1, :lw] += left[:, r0:r1]
        for r0, r1 in gaps:
            acc_cols[:, r0:r1, :lw] += left[:, r0:r1]

    # (votes, their rows and columns there, the offset of their columns in the block)
    parts = [(acc_rows, r0, min(r1, fh), 0, fw, 0) for r0, r1 in row_bands]
    for a, b in _overlap_bands(job, block.cols, fw):
        parts += [(acc_cols, r0, min(r1, fh), slot[a], slot[a] + b - a, a - slot[a]) for r0, r1 in gaps]
    for acc, r0, r1, c0, c1, dc in parts:
        if r0 >= r1 or c0 >= c1:
            continue
        argmax_votes(acc, k, r0, r1, c0, c1, classes, dc)
        if probs is not None:
            part = acc[:, r0:r1, c0:c1]
            probs[:, r0:r1, c0 + dc : c1 + dc] = np.rint(part[:k] * (255.0 / np.maximum(part[k], 1))).astype(np.uint8)
    nodata = ~valid[:fh, :fw]
    classes = classes[:fh, :fw]
    classes[nodata] = NODATA
    if probs is not None:
        probs = probs[:, :fh, :fw]
        probs[:, nodata] = 0
    bottom = acc_rows[:, fh:, :fw].copy() if fh < bh else None
    right = None
    if fw < bw:  # the right margin, dense: horizontal bands from one store, the rest from the other
        right = np.empty((acc_rows.shape[0], bh, bw - fw), dtype=np.int32)
        for r0, r1 in row_bands:
            right[:, r0:r1] = acc_rows[:, r0:r1, fw:]
        for r0, r1 in gaps:
            right[:, r0:r1] = acc_cols[:, r0:r1, slot[fw] : slot[fw] + bw - fw]
    table, masks = pack_pieces(votes.pieces) if job.objects else (None, None)
    return BlockResult(classes, probs, bottom, right, votes.n_tiles, table, masks)


def _strip(result: BlockResult, side: str) -> np.ndarray | None:
    return getattr(result, side)


def block_graph(job: SceneJob, blocks: list[list[Block]], store: ChunkStore | None = None,
                done: frozenset = frozenset(), resources: dict | None = None) -> list[tuple[Block, object]]:
    """Delayed block results: model tasks, and finishing tasks that take their neighbours' strips.

    Blocks in ``done`` (saved in ``store`` by an earlier run) get no tasks; a
    neighbour of one takes its strip from the store. ``resources`` (for example
    ``{"GPU": 1}``) annotates the model tasks for a cluster that declares them.
    """
    import dask
    from dask.base import tokenize

    token = tokenize(job)
    delayed_infer = dask.delayed(infer_block, pure=True)
    delayed_finish = dask.delayed(finish_block, pure=True)
    delayed_strip = dask.delayed(_strip, pure=True)
    results: dict[tuple[int, int], object] = {}
    out = []

    def strip(i: int, j: int, side: str):
        if (i, j) in done:
            arr = store.load(i, j, (side,))[side]
            return None if arr is None else dask.delayed(arr, name=f"{side}-{token}-{i}-{j}")
        res = results.get((i, j))
        return None if res is None else delayed_strip(res, side, dask_key_name=f"{side}-{token}-{i}-{j}")

    for row in blocks:
        for b in row:
            if (b.i, b.j) in done:
                continue
            top = strip(b.i - 1, b.j, "bottom") if b.i > 0 else None
            left = strip(b.i, b.j - 1, "right") if b.j > 0 else None
            with dask.annotate(resources=resources) if resources else contextlib.nullcontext():
                votes = delayed_infer(job, b, dask_key_name=f"infer-{token}-{b.i}-{b.j}")
            res = delayed_finish(job, b, votes, top, left, dask_key_name=f"block-{token}-{b.i}-{b.j}")
            results[(b.i, b.j)] = res
            out.append((b, res))
    return out


def predict_scene(info: SceneInfo, bundle: str | os.PathLike, classes: ClassList, out,
                  options, runner: Runner, tile_size: int, overlap: int,
                  bands: tuple[int, ...], mean: tuple[float, ...], std: tuple[float, ...],
                  choice=None, checkpoint: Path | None = None, objects=None, write_instances=None,
                  crf=None):
    """Predict one checked scene into ``out``; nothing is left behind on failure.

    ``out`` and ``options`` are the run's :class:`geoseg.prediction.SceneOutputs` and
    :class:`geoseg.prediction.PredictOptions`; the returned outputs add the chunk counts.
    ``choice``: the engine and precision (:func:`geoseg.engines.resolve`; default torch fp32).
    ``checkpoint``: a folder where finished chunks are saved as they come (see
    :mod:`geoseg.io.checkpoint`); a run killed mid-scene resumes from them.
    ``objects``: the bundle's :class:`geoseg.models.bundle.ObjectChannels`; their objects, owned per
    tile and merged across tiles (:mod:`geoseg.inference.pieces`), go to ``write_instances(instances)``
    before the class raster is committed.
    ``crf``: :class:`geoseg.refine.CRFSettings`: the blended probabilities go to a temporary raster, and
    the class raster is their dense-CRF refinement on the fixed window grid (:mod:`geoseg.refine.crf`).
    """
    grid = TileGrid(info.height, info.width, tile_size, overlap)
    job = SceneJob(
        scene=info, bundle=str(Path(bundle).resolve()), bands=bands, mean=mean, std=std,
        num_classes=len(classes), grid=grid, blend=check_blend(options.blend), device=options.device,
        batch_size=options.batch_size or default_batch_size(options.device),
        probabilities=options.probabilities or crf is not None,
        torch_threads=runner.torch_threads,
        engine=choice.engine if choice else "torch", precision=choice.precision if choice else "fp32",
        streams=runner.engine_streams,
        objects=tuple(objects.classes) if objects else (),
        decode=DecodeSettings(**objects.decode) if objects else None,
    )
    blocks = grid.blocks(options.chunk_size)
    n_blocks = sum(map(len, blocks))
    # a one-chunk scene has nothing to resume from but its chunk: it is not checkpointed
    store = _scene_store(checkpoint, job, options) if checkpoint is not None and n_blocks > 1 else None
    done = frozenset(store.done()) if store else frozenset()
    graph = block_graph(job, blocks, store, done, runner.model_resources)
    writers: list[ChunkWriter] = []
    bar = progress_bar(grid.n_tiles, Path(info.path).name, options.progress, unit="tile")

    pieces = []
    crf_probs: list[ChunkWriter] = []  # the probabilities the CRF refines (a temporary raster)

    def write(block: Block, result) -> None:
        win = block.final_window
        if job.objects:
            pieces.extend(unpack_pieces(result.piece_table, result.piece_masks))
        if crf_probs:
            crf_probs[0].write(result.probabilities, win)
        else:
            writers[0].write(result.classes, win)
        if out.probabilities:
            writers[1].write(result.probabilities, win)
        bar.update(result.n_tiles)

    def sink(block: Block, result: BlockResult) -> None:
        if store is not None:
            store.save(block.i, block.j, result)
        write(block, result)

    try:  # from the first temporary on: an interrupt anywhere below still removes every one of them
        writers.append(ChunkWriter(out.classes, info, 1, NODATA, colormap=classes.colormap(),
                                   nearest_overviews=options.overviews == "nearest"))
        if out.probabilities:
            writers.append(ChunkWriter(out.probabilities, info, len(classes), None))
        if crf is not None:
            crf_probs.append(ChunkWriter(out.classes.with_name(out.classes.name + ".crf"), info, len(classes), None))

        def write_saved() -> None:  # the chunks an earlier run saved: from the store, while the rest run
            for row in blocks:
                for b in row:
                    if (b.i, b.j) in done:
                        write(b, SimpleNamespace(**store.load(b.i, b.j, ("classes", "probabilities", "piece_table",
                                                                         "piece_masks"))))

        if done:
            log.info("%s: resuming: %d of %d chunks are saved in %s", info.path, len(done), n_blocks, store.folder)
        run_graph(graph, sink, runner, write_saved if done else None)
        bar.close()
        if crf is not None:
            _refine(info, job, crf, crf_probs[0], writers[0], options, runner)
        if job.objects:
            instances = merge_pieces(pieces, grid, measure="iou")
            pieces.clear()
            log.info("%s: %d objects (%d pieces merged)", info.path, len(instances),
                     sum(q.parts for q in instances if q.parts > 1))
            write_instances(instances)
            del instances  # not held while the class COG is finished
        write_class_sidecars(out.classes, classes)  # before the raster: its rename is the commit point
        writers[0].finish_cog(decorate_classes(classes), options.overviews.upper())
        if out.probabilities:
            writers[1].finish_cog(decorate_probabilities(classes), "AVERAGE")
    except BaseException:
        bar.close()
        for w in writers + crf_probs:
            w.discard()
        if not out.classes.exists():  # the sidecars of a raster that never came, and its instances
            for p in class_sidecars(out.classes):
                p.unlink(missing_ok=True)
            for p in (out.instances, out.instances_gpkg):
                if p is not None:
                    p.unlink(missing_ok=True)
        raise
    for w in crf_probs:
        w.discard()
    if store is not None:
        store.remove()
    return replace(out, chunks=n_blocks, chunks_resumed=len(done))


def _refine(info: SceneInfo, job: SceneJob, crf, probs: ChunkWriter, classes: ChunkWriter, options,
            runner: Runner) -> None:
    """The class raster as the dense-CRF refinement of the probabilities in ``probs`` (closed here)."""
    import dask
    from dask.base import tokenize

    from geoseg.refine.crf import WINDOW, refine_chunk

    probs.close()
    chunks = [c for row in chunk_grid(info.height, info.width, options.chunk_size, align=WINDOW) for c in row]
    token = tokenize(info.path, job.bundle, crf.to_dict(), options.chunk_size)
    graph = [(c, dask.delayed(refine_chunk)(info, str(probs.tmp), job.bands, job.mean, job.std, crf, c.window,
                                            dask_key_name=f"crf-{token}-{c.i}-{c.j}")) for c in chunks]
    bar = progress_bar(len(chunks), f"{Path(info.path).name} (CRF)", options.progress)
    try:
        run_graph(graph, lambda c, labels: (classes.write(labels, c.window), bar.update(1)), runner)
    finally:
        bar.close()


def _scene_store(checkpoint: Path, job: SceneJob, options) -> ChunkStore:
    """The scene's chunk store, keyed by everything its chunks depend on."""
    from geoseg.engines.cache import weights_hash

    st = os.stat(job.scene.path)
    g = job.grid
    key = store_key(dict(
        scene=os.path.realpath(job.scene.path), size=st.st_size, mtime=st.st_mtime_ns, bands=job.bands,
        mean=job.mean, std=job.std, weights=weights_hash(Path(job.bundle)), tile=g.tile_size, overlap=g.overlap,
        chunk=options.chunk_size, blend=job.blend, probabilities=job.probabilities, engine=job.engine,
        precision=job.precision, device=device_type(job.device), objects=job.objects,
        decode=job.decode.to_dict() if job.decode else None,
    ))
    return ChunkStore(Path(checkpoint) / f"{output_stem(job.scene.path)}-{key}")
