"""``geoseg evaluate --panoptic``: panoptic quality of a scene's (class id, instance id) raster, chunk by chunk.

The prediction is a two-band raster (``NAME.panoptic.tif``: band 1 class ids, band 2 instance ids, 0 =
no instance). The reference is the same kind of raster (reprojected by nearest neighbour onto the
prediction's grid where the grids differ) or a vector file whose every thing-class polygon is one
instance (stuff polygons give their class; pixels no polygon covers are the class list's background
class where it has one, else VOID).

Segments: every (thing class, instance) is one segment; each stuff class is one segment per scene
(the instance band is not read for it); on the reference side a thing class's pixels without an
instance are its crowd region. VOID: the class list's ignore value, nodata, ``--ignore`` classes. Each
chunk (a Dask task) returns the pixel counts of its (reference, prediction) segment pairs, which add
up, so the scene's PQ equals the whole arrays' at once in memory that follows the chunk size
(``geoseg.evaluation.panoptic``).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import RasterioError
from rasterio.windows import Window

from geoseg.classes import NODATA, ClassList, load_classes
from geoseg.errors import GeosegError
from geoseg.evaluation.panoptic import (
    PairCounts,
    PanopticStats,
    match_segments,
    panoptic_block,
    raster_segment_ids,
    raster_segments,
)
from geoseg.inference.scheduler import progress_bar, run_graph
from geoseg.inference.tiling import Chunk, chunk_grid
from geoseg.vector.labels import Grid, VectorLabels, is_vector, read_vectors

MERGE_EVERY = 64  # chunks' pair counts merged into the scene's this often (memory: segments, not chunks)


@dataclass(frozen=True)
class PanopticRaster:
    """A (class, instance) raster, read directly or reprojected (nearest neighbour) onto the grid."""

    path: str
    warp: bool
    nodata: float | None

    def read(self, grid: Grid, win: Window) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        from rasterio.vrt import WarpedVRT

        try:
            with rasterio.open(self.path) as src:
                if not self.warp:
                    arr = src.read([1, 2], window=win, boundless=True, fill_value=NODATA)
                else:
                    with WarpedVRT(src, crs=grid.crs, transform=grid.transform, width=grid.width,
                                   height=grid.height, resampling=rasterio.enums.Resampling.nearest,
                                   nodata=self.nodata if self.nodata is not None else NODATA) as vrt:
                        arr = vrt.read([1, 2], window=win)
        except RasterioError as exc:
            raise GeosegError(f"read failed at {win!r} ({exc})", self.path) from None
        cls = arr[0]
        void = np.zeros(cls.shape, bool) if self.nodata is None else cls == self.nodata
        if self.warp:  # pixels the reprojection could not fill
            void |= cls == (self.nodata if self.nodata is not None else NODATA)
        return cls, arr[1], void


@dataclass(frozen=True)
class PanopticVectors:
    """Vector features: thing polygons are instances (their feature number), stuff polygons their class."""

    labels: VectorLabels
    things: tuple[bool, ...]

    def read(self, grid: Grid, win: Window) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        from geoseg.vector.labels import read_instances

        cls = self.labels.read(grid, win)
        inst, _ = read_instances(self.labels, grid, win)
        return cls, inst, cls < 0


@dataclass(frozen=True)
class PanopticJob:
    grid: Grid
    prediction: PanopticRaster
    reference: PanopticRaster | PanopticVectors
    known: np.ndarray  # bool per class value 0..255: a class of the list, not ignored
    things: np.ndarray  # bool per class value 0..255
    listed: np.ndarray  # bool per class value 0..255: a class of the list
    aoi: tuple = ()


def panoptic_chunk(job: PanopticJob, chunk: Chunk) -> PairCounts:
    win = chunk.window
    pc, pi, pv = job.prediction.read(job.grid, win)
    rc, ri, rv = job.reference.read(job.grid, win)
    lut = len(job.known) - 1
    pcl = _lut_index(pc, lut)
    listed = job.listed[pcl]
    if pc.dtype.kind != "u" or pc.dtype.itemsize > 1:
        listed &= pc == pcl  # values past the table are not classes
    wrong = ~pv & ~listed & (pc != NODATA)
    if wrong.any():
        raise GeosegError(f"holds class ids not in the class list: {sorted(set(pc[wrong].tolist()))[:8]} (at "
                          f"row {int(win.row_off)}, column {int(win.col_off)})", job.prediction.path)
    pv |= ~listed
    pv |= ~job.known[pcl]
    rcl = _lut_index(rc, lut)
    rv |= ~job.known[rcl]
    if rc.dtype.kind != "u" or rc.dtype.itemsize > 1:
        rv |= rc != rcl
    if job.aoi:
        from rasterio.features import geometry_mask
        from rasterio.windows import transform as window_transform

        outside = geometry_mask(job.aoi, (int(win.height), int(win.width)), window_transform(win, job.grid.transform))
        pv |= outside
        rv |= outside
    return PairCounts.of(raster_segment_ids(rc, ri, rv, job.things), raster_segment_ids(pc, pi, pv, job.things))


def _lut_index(values: np.ndarray, top: int) -> np.ndarray:
    """``values`` clipped into a lookup table of ``top + 1`` entries (unsigned arrays without a copy to int64)."""
    if values.dtype.kind == "u":
        return np.minimum(values, top)
    return np.clip(values, 0, top)


def class_tables(classes: ClassList, ignore=()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lookup tables over class values 0..255: scored (listed, not ignored), thing, listed."""
    known, things, listed = np.zeros(256, bool), np.zeros(256, bool), np.zeros(256, bool)
    for c in classes:
        known[c.id] = c.id not in ignore
        things[c.id] = c.isthing
        listed[c.id] = True
    return known, things, listed


def _open(path: str, role: str) -> tuple[Grid, float | None, dict, int]:
    try:
        with rasterio.open(path) as src:
            if src.count < 2:
                raise GeosegError(f"the {role} has {src.count} band; --panoptic needs two bands (class id, "
                                  "instance id), as NAME.panoptic.tif from geoseg predict --panoptic", path)
            if src.dtypes[0].startswith("float") or src.dtypes[1].startswith("float"):
                raise GeosegError(f"the {role} holds {src.dtypes[0]} values; panoptic rasters hold integer ids", path)
            return Grid(src.crs, src.transform, src.width, src.height), src.nodata, src.tags(), src.count
    except RasterioError as exc:
        raise GeosegError(f"not a readable raster ({exc})", path) from None


def panoptic_classes(options, tags: dict, path: str) -> ClassList:
    if options.classes:
        classes = load_classes(options.classes)
    elif "GEOSEG_CLASSES" in tags:
        classes = ClassList.from_dict({"classes": json.loads(tags["GEOSEG_CLASSES"])}, path)
    else:
        raise GeosegError("has no geoseg class metadata; pass --classes (a class list with isthing on the thing "
                          "classes)", path)
    if not classes.things:
        raise GeosegError("the class list marks no class as a thing (isthing: true), so nothing is an object; "
                          "pass --classes with isthing on the object classes", options.classes or path)
    return classes


def check_inputs(prediction: str, reference: str, options) -> None:
    """Both sides readable, two bands where rasters, a class list with things: one line before any work."""
    _, _, tags, _ = _open(prediction, "prediction")
    panoptic_classes(options, tags, prediction)
    if not is_vector(reference):
        _open(reference, "reference")


def evaluate_panoptic_scene(prediction: str, reference: str, classes: ClassList, options, runner, aoi=()
                            ) -> PanopticStats:
    """The scene's per-class panoptic statistics (``options``: ``geoseg.evaluation.evaluate.EvaluateOptions``)."""
    grid, pred_nodata, _, _ = _open(prediction, "prediction")
    known, things, listed = class_tables(classes, options.ignore)
    pred = PanopticRaster(prediction, False, pred_nodata if pred_nodata is not None else NODATA)
    if is_vector(reference):
        geoms, ids = read_vectors(reference, grid.crs, options.class_field, classes, "reference",
                                  options.reference_class)
        background = next((c.id for c in classes if not c.vectorize and not c.isthing), NODATA)
        ref = PanopticVectors(VectorLabels(geoms, ids, background), tuple(things.tolist()))
    else:
        rgrid, rnodata, _, _ = _open(reference, "reference")
        same = rgrid.crs == grid.crs and rgrid.transform == grid.transform and \
            (rgrid.height, rgrid.width) == (grid.height, grid.width)
        if not same and (grid.crs is None or rgrid.crs is None):
            raise GeosegError("without georeferencing the pixel grids must match exactly", reference)
        ref = PanopticRaster(reference, not same, rnodata)
    job = PanopticJob(grid, pred, ref, known, things, listed, tuple(aoi))
    chunks = [c for row in chunk_grid(grid.height, grid.width, options.chunk_size) for c in row]
    import dask

    task = dask.delayed(panoptic_chunk, pure=True)
    parts: list[PairCounts] = []
    total = [PairCounts.empty()]
    lock = threading.Lock()
    bar = progress_bar(len(chunks), f"{Path(prediction).name} (panoptic)", options.progress)

    def sink(chunk: Chunk, res: PairCounts) -> None:
        with lock:
            parts.append(res)
            if len(parts) >= MERGE_EVERY:
                total[0] = PairCounts.concat([total[0], *parts])
                parts.clear()
        bar.update(1)

    try:
        run_graph([(c, task(job, c)) for c in chunks], sink, runner)
    finally:
        bar.close()
    pairs = PairCounts.concat([total[0], *parts])
    return match_segments(pairs, raster_segments(np.unique(pairs.ref), things, True),
                          raster_segments(np.unique(pairs.pred), things, False), check=False)


def panoptic_report(stats: PanopticStats, classes: ClassList, ignore=()) -> dict:
    """The report's ``panoptic`` block over the class list (ignored classes left out)."""
    return panoptic_block(stats, {c.id: {"name": c.name, "isthing": int(c.isthing)} for c in classes
                                  if c.id not in ignore})
