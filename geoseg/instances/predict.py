"""Instance prediction of one scene: the block graph, the merge, and the outputs."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from geoseg.classes import ClassList
from geoseg.errors import GeosegError
from geoseg.inference.scheduler import Runner, progress_bar, run_graph
from geoseg.inference.tiling import TileGrid
from geoseg.io.raster import SceneInfo, ground_sample_distance

log = logging.getLogger("geoseg")
DEFAULT_SCORE_THRESHOLD = 0.5
DEFAULT_MASK_THRESHOLD = 0.5


def max_object_pixels(spec: str | float | None, info: SceneInfo, default: int | None) -> int | None:
    """``--max-object-size``: pixels (``40``, ``40px``) or metres (``12m``, converted with the scene's GSD)."""
    if spec is None:
        return default
    text = str(spec).strip().lower()
    m = re.fullmatch(r"([0-9]*\.?[0-9]+)\s*(px|m)?", text)
    if not m or float(m.group(1)) <= 0:
        raise GeosegError(f"--max-object-size must be a positive size in pixels (40, 40px) or metres (12m), "
                          f"got {spec!r}")
    value = float(m.group(1))
    if m.group(2) == "m":
        gsd = ground_sample_distance(info)
        if not gsd:
            raise GeosegError("--max-object-size in metres needs a scene with a known ground sample distance",
                              info.path)
        return int(-(-value // gsd))
    return int(-(-value // 1))


def check_overlap(overlap: int, max_px: int | None, info: SceneInfo) -> None:
    if max_px is not None and overlap < max_px:
        raise GeosegError(f"--overlap {overlap} px is smaller than the largest expected object ({max_px} px, "
                          "--max-object-size): objects that large could be cut by tiles; raise --overlap "
                          f"to at least {max_px} (and --tile-size to at least twice that)", info.path)


def predict_instances_scene(info: SceneInfo, bundle: str, classes: ClassList, out, options, runner: Runner,
                            tile: int, overlap: int, bands, mean, image_id: int | None = None) -> list[dict]:
    """Predict one checked scene into ``out`` (instances.tif and .gpkg); returns its COCO results."""
    import dask

    from geoseg.inference.pieces import merge_pieces
    from geoseg.inference.predictor import default_batch_size
    from geoseg.instances.io import coco_results, write_gpkg, write_raster
    from geoseg.instances.tiled import InstanceJob, infer_block

    grid = TileGrid(info.height, info.width, tile, overlap)
    blocks = [b for row in grid.blocks(options.chunk_size) for b in row]
    threads = runner.torch_threads
    if not runner.distributed and len(blocks) < runner.workers:  # fewer blocks than workers: give them the cores
        threads = max(1, (os.cpu_count() or 1) // len(blocks))
    job = InstanceJob(
        scene=info, bundle=str(Path(bundle).resolve()), bands=bands, mean=mean, grid=grid, device=options.device,
        batch_size=options.batch_size or default_batch_size(options.device),
        score_threshold=DEFAULT_SCORE_THRESHOLD if options.score_threshold is None else options.score_threshold,
        mask_threshold=DEFAULT_MASK_THRESHOLD if options.mask_threshold is None else options.mask_threshold,
        torch_threads=threads,
    )
    delayed = dask.delayed(infer_block, pure=True)
    token = dask.base.tokenize(job)
    graph = [(b, delayed(job, b, dask_key_name=f"instances-{token}-{b.i}-{b.j}")) for b in blocks]
    pieces = []
    bar = progress_bar(grid.n_tiles, Path(info.path).name, options.progress, unit="tile")

    def sink(block, result) -> None:
        pieces.extend(result)
        bar.update(block.n_tiles)

    try:
        run_graph(graph, sink, runner)
    finally:
        bar.close()
    instances = merge_pieces(pieces, grid)
    log.info("%s: %d instances (%d pieces merged)", info.path, len(instances),
             sum(q.parts for q in instances if q.parts > 1))
    write_gpkg(out.instances_gpkg, instances, info, classes, options.regularize)  # before the raster: its rename is the commit point
    try:
        write_raster(out.instances, instances, info, options.chunk_size)
    except BaseException:
        out.instances_gpkg.unlink(missing_ok=True)
        raise
    return coco_results(instances, info, image_id) if image_id is not None else []
