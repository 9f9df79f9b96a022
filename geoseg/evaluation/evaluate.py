"""Accuracy audits: a class raster (or a geoseg GeoPackage) against a reference.

The reference may be a class raster (reprojected by nearest neighbour onto the
prediction's grid, window by window, when its grid differs) or vectors
(reprojected, then rasterized per chunk with ``all_touched=False``). Each
chunk is a Dask task returning confusion matrices in pixels and in m², the
counts of its audit-grid cells, and the TP/FP/FN class codes of its pixels,
which are written to temporary rasters and vectorized into ``audit.gpkg``.
Memory follows the chunk size, not the scene size.
"""

from __future__ import annotations

import logging
import math
import os
import re
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
import shapely
from rasterio.errors import RasterioError
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from geoseg.classes import NODATA, ClassList, SegClass, load_classes, object_classes
from geoseg.errors import GeosegError
from geoseg.evaluation.clusters import UNMATCHED, RelabelledLabels
from geoseg.evaluation.metrics import Confusion, match_objects
from geoseg.inference.scheduler import open_runner, progress_bar, run_graph
from geoseg.inference.tiling import Chunk, chunk_grid
from geoseg.io.inputs import ogr_path, output_beside
from geoseg.io.output import clean_stale, output_dir, tmp_folder, vector_write_errors, write_error
from geoseg.io.raster import gdal_cache
from geoseg.options import check_options
from geoseg.vector.labels import VECTOR_SUFFIXES, Grid, RasterLabels, VectorLabels, is_vector, read_vectors

log = logging.getLogger("geoseg")
RASTER_SUFFIXES = (".tif", ".tiff")
ERROR_MAP_SIDE = 400  # the report's error map: at most this many cells along the scene's longer side


@dataclass(frozen=True)
class EvaluateOptions:
    """Options of ``geoseg evaluate``."""

    classes: str | None = None  # class-list YAML; default: the prediction's own metadata
    class_field: str | None = None  # vector reference field holding class ids or names
    reference_class: str | None = None  # or: every reference feature is this class (name or id)
    ignore: tuple[int, ...] = ()
    aoi: str | None = None
    object_classes: tuple[str, ...] | None = None  # default: building-like classes
    iou_threshold: float = 0.5
    # reference objects of this many pixels of the evaluation grid or fewer are left out of the object
    # counts (the SpaceNet scorer's 20 px rule); 0 keeps every one
    min_reference_px: float = 20
    grid_size: int = 256
    chunk_size: int = 2048
    workers: int | None = None
    scheduler: str | None = None
    allow_missing: bool = False
    allow_no_crs: bool = False  # score rasters without georeferencing whose pixel grids match exactly
    resolution: float | None = None  # vector against vector: rasterize both at this pixel size (CRS units)
    grid: str | None = None  # vector against vector: or onto this template raster's grid
    audit: bool = True
    overwrite: bool = False
    progress: bool = True
    # the prediction is a clustering: match clusters to the reference classes one to one (Hungarian) per scene
    match_clusters: bool = False
    # the prediction is NAME.panoptic.tif (class id, instance id): panoptic quality too (geoseg.evaluation.panoptic)
    panoptic: bool = False

    def __post_init__(self) -> None:
        check_options(self)


# -- per-chunk work ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvalJob:
    grid: Grid
    prediction: RasterLabels | VectorLabels
    reference: RasterLabels | VectorLabels
    num_classes: int
    ignore: tuple[int, ...]
    aoi: tuple  # polygons in the grid's CRS, or empty for everything
    row_area: tuple[float, ...] | None  # m² per pixel, per row (geographic CRS)
    pixel_area: float  # m² per pixel (projected CRS)
    cell: int
    foreground: tuple[int, ...] = ()  # class ids whose TP/FP/FN the report's error map shows
    map_cell: int = 0  # pixels per error-map cell side (0: no map)


@dataclass
class ChunkEval:
    conf: Confusion
    cells: dict[tuple[int, int], np.ndarray]  # (cell row, cell col) -> (K, 3) TP/FP/FN pixel counts
    codes: np.ndarray | None = field(repr=False)  # (3, h, w) uint8 class ids of TP, FP, FN pixels
    errors: dict = field(default_factory=dict)  # (map row, map col) -> foreground (TP, FP, FN) pixel counts


def evaluate_chunk(job: EvalJob, chunk: Chunk, with_codes: bool) -> ChunkEval:
    """Confusion (pixels and m²), per-cell TP/FP/FN and audit codes of one chunk.

    One ``bincount`` over ``cell * K² + reference * K + prediction`` gives every
    audit cell's confusion matrix; the chunk's is their sum.
    """
    win = chunk.window
    k = job.num_classes
    pred = job.prediction.read(job.grid, win)
    ref = job.reference.read(job.grid, win)
    valid = (pred < k) & (ref < k) & (pred >= 0) & (ref >= 0)
    for c in job.ignore:
        valid &= (ref != c) & (pred != c)
    if job.aoi:
        from rasterio.features import geometry_mask

        valid &= geometry_mask(job.aoi, out_shape=pred.shape, transform=window_transform(win, job.grid.transform),
                               invert=True)
    h, w = pred.shape
    r0, c0 = int(win.row_off), int(win.col_off)
    # One bincount at the finer of the two cell sizes (the error map's, when it divides the audit
    # grid's) gives every fine cell's confusion matrix; audit cells and the chunk's matrix are sums of them.
    fine = job.map_cell if job.map_cell and job.cell % job.map_cell == 0 else job.cell
    per_fine, nfx = _cell_confusions(ref, pred, valid, k, fine, r0, c0)
    conf = Confusion(k, px=per_fine.sum(axis=0).astype(np.int64))
    if job.row_area is not None:
        area = np.asarray(job.row_area[r0 : r0 + h])[:, None]
        wts = np.broadcast_to(area, pred.shape)[valid]
        conf.m2 = np.bincount((ref * k + pred)[valid], weights=wts, minlength=k * k).reshape(k, k)
    else:
        conf.m2 = conf.px * job.pixel_area

    used = np.nonzero(per_fine.reshape(len(per_fine), -1).any(axis=1))[0]
    rows, cols = r0 // fine + used // nfx, c0 // fine + used % nfx  # global fine-cell coordinates
    cells = {key: _tp_fp_fn(m) for key, m in _sum_by_key(rows * fine // job.cell, cols * fine // job.cell,
                                                            per_fine[used])}
    errors = {}
    if job.map_cell and fine == job.map_cell:
        fg = np.zeros(k, dtype=bool)
        fg[list(job.foreground)] = True
        m = per_fine[used]
        diag = m[:, np.arange(k), np.arange(k)]
        t = np.stack([diag[:, fg].sum(1), (m.sum(1) - diag)[:, fg].sum(1), (m.sum(2) - diag)[:, fg].sum(1)], 1)
        errors = {(int(rows[i]), int(cols[i])): t[i] for i in np.flatnonzero(t.any(axis=1))}
    elif job.map_cell:
        errors = _error_cells(job, pred, ref, valid, r0, c0)
    codes = None
    if with_codes:
        codes = np.full((3,) + pred.shape, NODATA, dtype=np.uint8)
        hit = valid & (pred == ref)
        miss = valid & (pred != ref)
        codes[0][hit] = pred[hit]
        codes[1][miss] = pred[miss]
        codes[2][miss] = ref[miss]
    return ChunkEval(conf, cells, codes, errors)


def _cell_confusions(ref, pred, valid, k: int, cell: int, r0: int, c0: int) -> tuple[np.ndarray, int]:
    """``(n_cells, K, K)`` confusion matrices of the ``cell``-sized cells of the global grid a chunk touches."""
    h, w = pred.shape
    cy = (np.arange(r0, r0 + h) // cell) - r0 // cell
    cx = (np.arange(c0, c0 + w) // cell) - c0 // cell
    ncx = int(cx[-1]) + 1
    ncell = (int(cy[-1]) + 1) * ncx
    kk = k * k
    index = (cy[:, None] * ncx + cx[None, :]) * kk + ref * k + pred
    return np.bincount(index[valid], minlength=ncell * kk).reshape(ncell, k, k), ncx


def _tp_fp_fn(m: np.ndarray) -> np.ndarray:
    """``(K, 3)`` TP, FP, FN per class of a confusion matrix (rows: reference)."""
    tp = np.diag(m)
    return np.stack([tp, m.sum(axis=0) - tp, m.sum(axis=1) - tp], axis=1)


def _sum_by_key(rows: np.ndarray, cols: np.ndarray, mats: np.ndarray):
    """``((row, col), summed matrix)`` for each distinct key."""
    if not len(rows):
        return []
    keys = rows.astype(np.int64) * (int(cols.max()) + 1) + cols
    order = np.argsort(keys, kind="stable")
    keys, mats, rows, cols = keys[order], mats[order], rows[order], cols[order]
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    sums = np.add.reduceat(mats, starts, axis=0)
    return [((int(rows[i]), int(cols[i])), m) for i, m in zip(starts, sums)]


def _error_cells(job: EvalJob, pred, ref, valid, r0: int, c0: int) -> dict:
    """Foreground TP, FP and FN pixel counts per ``map_cell``-sized cell of the global grid."""
    f = job.map_cell
    h, w = pred.shape
    my = (np.arange(r0, r0 + h) // f) - r0 // f
    mx = (np.arange(c0, c0 + w) // f) - c0 // f
    nx = int(mx[-1]) + 1
    n = (int(my[-1]) + 1) * nx
    index = my[:, None] * nx + mx[None, :]
    fg_pred, fg_ref = np.isin(pred, job.foreground), np.isin(ref, job.foreground)
    same = pred == ref
    counts = np.stack([np.bincount(index[valid & m], minlength=n)
                       for m in (fg_pred & same, fg_pred & ~same, fg_ref & ~same)], axis=1)
    return {(r0 // f + int(i) // nx, c0 // f + int(i) % nx): counts[i] for i in np.nonzero(counts.any(axis=1))[0]}


# -- the driver ----------------------------------------------------------------------------------------


@dataclass
class SceneResult:
    name: str
    prediction: str
    reference: str
    crs: str | None
    conf: Confusion
    objects: dict | None
    cells: dict
    grid: Grid
    cell_size: int
    errors: dict = field(default_factory=dict)  # error map cells, see ChunkEval.errors
    map_cell: int = 0
    panoptic: object | None = None  # geoseg.evaluation.panoptic.PanopticStats (evaluate --panoptic)


def _row_areas(grid: Grid) -> tuple[float, ...] | None:
    if grid.crs is None or not grid.crs.is_geographic:
        return None
    from pyproj import CRS, Geod

    ell = CRS.from_user_input(grid.crs.to_wkt()).ellipsoid
    geod = Geod(a=ell.semi_major_metre, b=ell.semi_minor_metre)
    t = grid.transform
    out = []
    for r in range(grid.height):
        x0, y0 = t * (0, r)
        x1, y1 = t * (1, r + 1)
        a, _ = geod.polygon_area_perimeter([x0, x1, x1, x0], [y0, y0, y1, y1])
        out.append(abs(a))
    return tuple(out)


def _pixel_area(grid: Grid) -> float:
    t = grid.transform
    if grid.crs is not None and grid.crs.is_geographic:
        return float("nan")  # per-row geodesic areas are used instead
    unit = 1.0 if grid.crs is None else float(grid.crs.linear_units_factor[1])
    return abs(t.a * t.e - t.b * t.d) * unit**2


def _open_grid(path: str, role: str) -> tuple[Grid, float | None, dict]:
    if not os.path.exists(path):
        raise GeosegError("no such file", path)
    try:
        with rasterio.open(path) as src:
            if src.dtypes[0].startswith("float"):
                raise GeosegError(f"the {role} is a {src.dtypes[0]} raster; class rasters hold integer ids", path)
            return Grid(src.crs, src.transform, src.width, src.height), src.nodata, src.tags()
    except RasterioError as exc:
        raise GeosegError(f"not a readable raster ({exc})", path) from None


def _classes_for(options: EvaluateOptions, tags: dict, path: str) -> ClassList:
    import json

    if options.classes:
        return load_classes(options.classes)
    if "GEOSEG_CLASSES" in tags:
        return ClassList.from_dict({"classes": json.loads(tags["GEOSEG_CLASSES"])}, path)
    raise GeosegError("has no geoseg class metadata; pass --classes", path)


def evaluate_scene(prediction: str, reference: str, options: EvaluateOptions, runner, audit_dir: Path | None,
                   classes: ClassList | None = None, relabel: np.ndarray | None = None
                   ) -> tuple[SceneResult, ClassList, Path | None]:
    """Evaluate one prediction against one reference; ``relabel``: a lookup table the prediction's ids are
    read through (a clustering's matching, :mod:`geoseg.evaluation.clusters`)."""
    prediction, reference = os.fspath(prediction), os.fspath(reference)
    pred_vec, ref_vec = is_vector(prediction), is_vector(reference)
    if pred_vec and ref_vec:
        if classes is None:
            if not options.classes and not _is_geoseg_gpkg(prediction):
                raise GeosegError("both sides are vector files, and the prediction is not a geoseg GeoPackage: the "
                                  "prediction must be a class raster (NAME.classes.tif) or a GeoPackage geoseg wrote "
                                  "(geoseg vectorize, NAME.instances.gpkg); the reference may be vectors", prediction)
            classes = _classes_for(options, {}, prediction)
        return _evaluate_vectors(prediction, reference, options, runner, audit_dir, classes)
    if pred_vec:
        grid, ref_nodata, tags = _open_grid(reference, "reference")
    else:
        grid, pred_nodata, tags = _open_grid(prediction, "prediction")
    if classes is None:
        classes = _classes_for(options, tags, prediction if not pred_vec else reference)
    if grid.crs is None and (pred_vec or ref_vec or not options.allow_no_crs):
        raise GeosegError("has no CRS: cannot place it against the other side"
                          + ("" if pred_vec or ref_vec else " (pass --allow-no-crs to compare pixel grids "
                                                            "that match exactly)"), reference if pred_vec else prediction)

    background = next((c.id for c in classes if not c.vectorize), 0)
    if pred_vec:
        geoms, ids = read_vectors(prediction, grid.crs, "class_id", classes, "prediction")
        pred_src = VectorLabels(geoms, ids, background)
        ref_src = RasterLabels(reference, False, ref_nodata)
        other_bounds, other_crs = grid.bounds, grid.crs
    else:
        pred_src = RasterLabels(prediction, False, pred_nodata)
        if relabel is not None:
            pred_src = RelabelledLabels(pred_src, relabel)
        if ref_vec:
            geoms, ids = read_vectors(reference, grid.crs, options.class_field, classes, "reference",
                                       options.reference_class)
            if not geoms:
                raise GeosegError("the reference has no features", reference)
            ref_src = VectorLabels(geoms, ids, background)
            other_bounds, other_crs = tuple(shapely.total_bounds(np.asarray(geoms, dtype=object))), grid.crs
        else:
            try:
                with rasterio.open(reference) as src:
                    if grid.crs is None or src.crs is None:
                        if not options.allow_no_crs:
                            raise GeosegError("the reference has no CRS (pass --allow-no-crs to compare "
                                              "pixel grids that match exactly)", reference)
                        if src.crs is not None or src.shape != (grid.height, grid.width):
                            raise GeosegError(f"without georeferencing the pixel grids must match exactly: the "
                                              f"reference is {src.width}x{src.height}"
                                              f"{' with a CRS' if src.crs else ''}, the prediction "
                                              f"{grid.width}x{grid.height}", reference)
                    same = src.crs == grid.crs and src.transform == grid.transform and src.shape == (grid.height,
                                                                                                   grid.width)
                    ref_src = RasterLabels(reference, not same, src.nodata)
                    other_bounds, other_crs = src.bounds, src.crs
            except RasterioError as exc:
                raise GeosegError(f"not a readable raster ({exc})", reference) from None
    if grid.crs is not None:
        _check_overlap(grid, other_bounds, other_crs, prediction, reference)
    return _evaluate_on_grid(grid, pred_src, ref_src, prediction, reference, options, runner, audit_dir, classes)


def _is_geoseg_gpkg(path: str) -> bool:
    """Whether ``path`` is a GeoPackage geoseg wrote (its layers carry geoseg's styles)."""
    import sqlite3

    if not path.lower().endswith(".gpkg") or not os.path.isfile(path):
        return False
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return bool(con.execute("SELECT 1 FROM layer_styles WHERE description = 'geoseg class style' "
                                    "LIMIT 1").fetchone())
        finally:
            con.close()
    except sqlite3.Error:
        return False


def _evaluate_vectors(prediction: str, reference: str, options: EvaluateOptions, runner, audit_dir, classes):
    """Vector against vector: both rasterized onto a grid (``--resolution`` or ``--grid``); objects from the polygons."""
    background = next((c.id for c in classes if not c.vectorize), 0)
    import pyogrio

    try:
        crs = rasterio.crs.CRS.from_user_input(pyogrio.read_info(ogr_path(prediction))["crs"])
    except Exception:
        crs = None
    if options.grid:
        grid, _, _ = _open_grid(options.grid, "grid template")
    elif options.resolution:
        if crs is None:
            raise GeosegError("the prediction has no CRS", prediction)
        grid = None
    else:
        raise GeosegError("both sides are vectors: pass --resolution (pixel size in CRS units) or --grid "
                          "(a template raster) to say where to rasterize them", prediction)
    target_crs = grid.crs if grid is not None else crs
    geoms, ids = read_vectors(prediction, target_crs, None, classes, "prediction")
    pred_src = VectorLabels(geoms, ids, background)
    rgeoms, rids = read_vectors(reference, target_crs, options.class_field, classes, "reference",
                                options.reference_class)
    ref_src = VectorLabels(rgeoms, rids, background)
    if grid is None:
        if target_crs.is_geographic:
            raise GeosegError("the prediction is in a geographic CRS: give --grid, or reproject it, since "
                              "--resolution is in CRS units", prediction)
        allg = np.asarray(list(geoms) + list(rgeoms), dtype=object)
        x0, y0, x1, y1 = shapely.total_bounds(allg)
        r = options.resolution
        x0, y1 = np.floor(x0 / r) * r, np.ceil(y1 / r) * r
        width, height = max(1, int(np.ceil((x1 - x0) / r))), max(1, int(np.ceil((y1 - y0) / r)))
        grid = Grid(target_crs, rasterio.Affine(r, 0, x0, 0, -r, y1), width, height)
    return _evaluate_on_grid(grid, pred_src, ref_src, prediction, reference, options, runner, audit_dir, classes)


def _evaluate_on_grid(grid: Grid, pred_src, ref_src, prediction: str, reference: str, options: EvaluateOptions,
                      runner, audit_dir, classes: ClassList):
    k = max(c.id for c in classes) + 1
    aoi = _aoi_polygons(options.aoi, grid.crs)

    # a power of two, so that it divides the audit grid's cell and one bincount serves both
    map_cell = 1 << max(0, math.ceil(math.log2(max(1, -(-max(grid.height, grid.width) // ERROR_MAP_SIDE)))))
    foreground = tuple(c.id for c in classes if c.vectorize and c.id not in options.ignore)
    job = EvalJob(grid, pred_src, ref_src, k, tuple(options.ignore), aoi, _row_areas(grid), _pixel_area(grid),
                  options.grid_size, foreground, map_cell)
    chunks = chunk_grid(grid.height, grid.width, options.chunk_size)
    conf = Confusion(k)
    cells: dict = {}
    errors: dict = {}
    lock = threading.Lock()
    writers = _CodeWriters(grid, audit_dir, _scene_name(prediction)) if audit_dir is not None else None
    bar = progress_bar(sum(len(r) for r in chunks), Path(prediction).name, options.progress)
    import dask

    task = dask.delayed(evaluate_chunk, pure=True)
    graph = [(c, task(job, c, writers is not None)) for row in chunks for c in row]

    def sink(chunk: Chunk, res: ChunkEval) -> None:
        with lock:
            conf.__iadd__(res.conf)
            for key, counts in res.cells.items():  # a cell may straddle chunks
                cells[key] = cells[key] + counts if key in cells else counts
            for key, counts in res.errors.items():
                errors[key] = errors[key] + counts if key in errors else counts
            if writers is not None:
                writers.write(res.codes, chunk.window)
        bar.update(1)

    try:
        run_graph(graph, sink, runner)
    except BaseException:
        if writers is not None:
            writers.discard()
        raise
    finally:
        bar.close()
    code_paths = writers.close() if writers is not None else None

    objects = None
    targets = object_classes(classes, options.object_classes)
    if targets:
        objects = {}
        beside = output_beside(prediction, ".instances.gpkg")
        if beside is not None:  # a model's own objects (object channels, Mask R-CNN), not the mask's components
            inst_geoms, inst_ids = read_vectors(beside, grid.crs, "class_id", classes, "prediction")
        for c in targets:
            if beside is not None:
                pred_polys = [shapely.make_valid(g) for g, i in zip(inst_geoms, inst_ids) if i == c.id]
            else:
                pred_polys = _class_polygons(pred_src, grid, c, prediction)
            ref_polys = _class_polygons(ref_src, grid, c, reference)
            if aoi:  # objects belong to the AOI where their representative point lies
                area = shapely.union_all(list(aoi))
                pred_polys = [g for g in pred_polys if area.contains(g.representative_point())]
                ref_polys = [g for g in ref_polys if area.contains(g.representative_point())]
            if options.min_reference_px:  # the SpaceNet rule: slivers of 20 px or less are not buildings to find
                pixel = abs(grid.transform.a * grid.transform.e - grid.transform.b * grid.transform.d)
                ref_polys = [g for g in ref_polys if g.area > options.min_reference_px * pixel]
            objects[c.name] = {**match_objects(ref_polys, pred_polys, options.iou_threshold).to_dict(),
                               "from": Path(beside).name if beside is not None else "class raster components"}
    name = _scene_name(prediction)
    return (SceneResult(name, prediction, reference, grid.crs.to_string() if grid.crs else None, conf, objects,
                        cells, grid, options.grid_size, errors, map_cell), classes, code_paths)


def _aoi_polygons(path: str | None, crs) -> tuple:
    """The ``--aoi`` polygons in ``crs`` (empty without an AOI)."""
    if not path:
        return ()
    import geopandas as gpd

    return tuple(gpd.read_file(path).to_crs(crs).geometry.values)


def _check_aoi(path: str) -> None:
    """The AOI must be a readable vector file with polygons: checked before any work."""
    import pyogrio

    if not os.path.isfile(path):
        raise GeosegError("--aoi: no such file", path)
    try:
        info = pyogrio.read_info(ogr_path(path))
    except Exception as exc:  # pyogrio raises DataSourceError and friends for anything not a vector file
        raise GeosegError(f"--aoi: not a readable vector file ({' '.join(str(exc).split())[:160]})", path) from None
    if not info.get("features"):
        raise GeosegError("--aoi holds no features", path)
    if "Polygon" not in str(info.get("geometry_type")):
        raise GeosegError(f"--aoi must hold polygons, not {info.get('geometry_type')}", path)


def _check_overlap(grid: Grid, bounds, crs, prediction: str, reference: str) -> None:
    from rasterio.warp import transform_bounds

    if crs != grid.crs:
        bounds = transform_bounds(crs, grid.crs, *bounds)
    if not shapely.box(*grid.bounds).intersects(shapely.box(*bounds)) or \
            shapely.box(*grid.bounds).intersection(shapely.box(*bounds)).area == 0:
        raise GeosegError(f"does not overlap the reference {reference}", prediction)


def _class_polygons(src, grid: Grid, cls: SegClass, path: str) -> list:
    """Objects of one class: features for vectors, 8-connected components for rasters."""
    if isinstance(src, VectorLabels):
        return [shapely.make_valid(g) for g, i in zip(src.geoms, src.ids) if i == cls.id]
    from geoseg.vector.vectorize import VectorizeOptions, vectorize

    # components via the vectorize engine, so the object definition is the map's
    with tempfile.TemporaryDirectory() as tmp:
        import pyogrio

        one = Path(tmp) / "one.tif"
        # windows of the evaluation grid (the reference may be on another grid: it is read reprojected)
        with rasterio.open(one, "w", driver="GTiff", width=grid.width, height=grid.height, count=1, dtype="uint8",
                           nodata=0, crs=grid.crs, transform=grid.transform, tiled=True) as d:
            for row in chunk_grid(grid.height, grid.width, 2048):
                for chunk in row:
                    arr = src.read(grid, chunk.window)
                    d.write((arr == cls.id).astype(np.uint8), 1, window=chunk.window)
        gpkg = vectorize(one, Path(tmp) / "one.gpkg", VectorizeOptions(connectivity=8, progress=False,
                                                                       allow_no_crs=True),
                         classes=ClassList((SegClass(1, cls.name, cls.color),)))
        layers = [n for n, _ in pyogrio.list_layers(gpkg) if n != "layer_styles"]
        return [g for n in layers for g in pyogrio.read_dataframe(gpkg, layer=n).geometry.values]


def _scene_name(path: str) -> str:
    name = Path(path).name
    for suffix in (".classes.tif", ".panoptic.tif", ".instances.gpkg", ".panoptic.gpkg", ".gpkg", ".tif", ".tiff"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(path).stem


def reference_stem(path: str | os.PathLike) -> str:
    """The scene a reference file is for: ``a.tif``, ``a.geojson``, ``a_labels.gpkg`` -> ``a``."""
    return re.sub(r"(_labels|\.labels|_reference)$", "", _scene_name(str(path)))


class _CodeWriters:
    """Three temporary rasters: the class of each TP, FP and FN pixel."""

    def __init__(self, grid: Grid, folder: Path, scene: str) -> None:
        safe = re.sub(r"[;!]", "_", scene)  # GDAL's path parsing cuts file names there (see io.output.tmp_name)
        self.paths = [folder / f".audit-{kind}-{safe}-{os.getpid()}.tif" for kind in ("tp", "fp", "fn")]
        profile = dict(driver="GTiff", width=grid.width, height=grid.height, count=1, dtype="uint8", nodata=NODATA,
                       crs=grid.crs, transform=grid.transform, tiled=True, blockxsize=512, blockysize=512,
                       compress="ZSTD")
        self.ds = []
        try:
            for p in self.paths:
                self.ds.append(rasterio.open(p, "w", **profile))
        except (RasterioError, OSError) as exc:
            self.discard()
            raise write_error(exc, folder.parent / "audit.gpkg") from None

    def write(self, codes: np.ndarray, win: Window) -> None:
        try:
            for ds, arr in zip(self.ds, codes):
                ds.write(arr, 1, window=win)
        except (RasterioError, OSError) as exc:
            raise write_error(exc, self.paths[0].parent.parent / "audit.gpkg") from None

    def close(self) -> list[Path]:
        for ds in self.ds:
            ds.close()
        return self.paths

    def discard(self) -> None:
        self.close()
        for p in self.paths:
            p.unlink(missing_ok=True)


# -- folders -------------------------------------------------------------------------------------------


def pair_scenes(predictions: str, references: str, allow_missing: bool, panoptic: bool = False
                ) -> list[tuple[str, str]]:
    """Match prediction and reference files by scene name (``panoptic``: the ``*.panoptic.tif`` predictions)."""
    pdir, rdir = Path(predictions), Path(references)
    if panoptic:
        preds = sorted(p for p in pdir.iterdir() if p.is_file() and p.name.endswith(".panoptic.tif"))
        if not preds:
            raise GeosegError("folder holds no panoptic prediction (*.panoptic.tif, from geoseg predict --panoptic)",
                              pdir)
    else:
        preds = sorted(p for p in pdir.iterdir() if p.is_file() and not p.name.startswith(".")
                       and (p.name.endswith(".classes.tif") or (
                           p.suffix.lower() in RASTER_SUFFIXES + (".gpkg",)
                           and not p.name.endswith((".probs.tif", ".instances.tif", ".panoptic.tif",
                                                    ".panoptic.gpkg")))))
    if not preds:
        raise GeosegError("folder holds no prediction (*.classes.tif, *.tif, *.gpkg)", pdir)
    refs: dict[str, Path] = {}
    for r in sorted(rdir.iterdir()):
        if r.is_file() and r.suffix.lower() in RASTER_SUFFIXES + VECTOR_SUFFIXES:
            refs.setdefault(reference_stem(r), r)
    pairs, missing = [], []
    for p in preds:
        name = _scene_name(str(p))
        if name in refs:
            pairs.append((str(p), str(refs[name])))
        else:
            missing.append(p.name)
    # a GeoPackage beside its class raster is the same scene (its instances give the objects); of a scene's
    # GeoPackages alone, the instances (Mask R-CNN's output) are the prediction
    def shadowed(pr) -> bool:
        if not pr[0].endswith(".gpkg"):
            return False
        same = [q[0] for q in pairs if q is not pr and _scene_name(q[0]) == _scene_name(pr[0])]
        return any(q.endswith(".classes.tif") for q in same) or (
            not pr[0].endswith(".instances.gpkg") and any(q.endswith(".instances.gpkg") for q in same))

    pairs = [pr for pr in pairs if not shadowed(pr)]
    if missing and not allow_missing:
        raise GeosegError(f"no reference for {len(missing)} scene(s): {', '.join(missing)}"
                          " (pass --allow-missing to skip them)", rdir)
    for m in missing:
        log.warning("%s: no reference, skipped", m)
    if not pairs:
        raise GeosegError("no scene has a reference", rdir)
    return pairs


def evaluate(prediction: str | os.PathLike, reference: str | os.PathLike, output: str | os.PathLike,
             options: EvaluateOptions | None = None, client: object | None = None):
    """Evaluate a scene (or matched folders of scenes) and write the reports into ``output``.

    Returns the report as a dict (the content of ``report.json``).
    """
    from geoseg.evaluation.report import build_report, write_reports

    options = options or EvaluateOptions()
    prediction, reference, out = os.fspath(prediction), os.fspath(reference), Path(output)
    if not os.path.exists(prediction):
        raise GeosegError("no such file or folder", prediction)
    if not os.path.exists(reference):
        raise GeosegError("no such file or folder", reference)
    clean_stale(out)  # a killed run's audit folder does not make the output folder "not empty"
    if out.exists() and any(out.iterdir()) and not options.overwrite:
        raise GeosegError("output folder is not empty; pass --overwrite to replace its reports", out)
    if os.path.isdir(prediction) != os.path.isdir(reference):
        raise GeosegError("give two files or two folders", prediction)
    if options.aoi:
        _check_aoi(options.aoi)
    pairs = pair_scenes(prediction, reference, options.allow_missing, options.panoptic) \
        if os.path.isdir(prediction) else [(prediction, reference)]
    if options.panoptic and options.match_clusters:
        raise GeosegError("--panoptic and --match-clusters do not go together")
    if options.panoptic:
        for p, _ in pairs:
            if is_vector(p):
                raise GeosegError("--panoptic scores a (class id, instance id) raster: NAME.panoptic.tif from "
                                  "geoseg predict --panoptic", p)
        from geoseg.evaluation.panoptic_scenes import check_inputs

        for p, r in pairs:  # before any work
            check_inputs(p, r, options)
    with output_dir(out):
        work = tmp_folder(out, "audit")
        try:
            results, classes, audits = [], None, []
            matching = None
            # GDAL's block cache bounded (its default, 5% of RAM, grows with the scene: every block is read once)
            with open_runner(options.scheduler, options.workers, client) as runner, gdal_cache():
                if options.match_clusters:
                    classes, matching = _match_cluster_scenes(pairs, options, runner, work, results, audits)
                else:
                    for p, r in pairs:
                        res, classes, codes = evaluate_scene(p, r, options, runner, work if options.audit else None,
                                                             classes)
                        if options.panoptic:
                            res.panoptic = _panoptic_scene(p, r, options, runner)
                        results.append(res)
                        audits.append((res, codes))
            if matching is not None:
                reference_classes = ClassList(tuple(c for c in classes if c.name != UNMATCHED))
                report = build_report(results, reference_classes, options, outside_counts=True)
                report["cluster_matching"] = matching
            else:
                report = build_report(results, classes, options)
            if options.panoptic:
                _add_panoptic(report, results, classes, options)
            if options.audit:
                from geoseg.evaluation.audit import write_audit

                try:
                    write_audit(work / "audit.gpkg", audits, classes, options)
                except vector_write_errors() as exc:
                    raise write_error(exc, out / "audit.gpkg") from None
            try:
                write_reports(report, results, classes, work)
                for f in work.iterdir():
                    if not f.name.startswith("."):
                        os.replace(f, out / f.name)
            except vector_write_errors() as exc:
                raise write_error(exc, out) from None
        finally:
            import shutil

            shutil.rmtree(work, ignore_errors=True)
    return report



def _panoptic_scene(prediction: str, reference: str, options: EvaluateOptions, runner):
    from geoseg.evaluation.panoptic_scenes import evaluate_panoptic_scene, panoptic_classes

    with rasterio.open(prediction) as src:
        tags, crs = src.tags(), src.crs
    return evaluate_panoptic_scene(prediction, reference, panoptic_classes(options, tags, prediction), options,
                                   runner, _aoi_polygons(options.aoi, crs))


def _add_panoptic(report: dict, results: list, classes: ClassList, options: EvaluateOptions) -> None:
    from geoseg.evaluation.panoptic import PanopticStats
    from geoseg.evaluation.panoptic_scenes import panoptic_report

    total = PanopticStats()
    for r, scene in zip(results, report["scenes"]):
        total += r.panoptic
        scene["panoptic"] = panoptic_report(r.panoptic, classes, options.ignore)
    report["panoptic"] = panoptic_report(total, classes, options.ignore)


def _match_cluster_scenes(pairs, options: EvaluateOptions, runner, work: Path, results: list, audits: list):
    """Per scene: count (class, cluster) pixels, match clusters to classes (Hungarian), score the matched raster."""
    import json
    from dataclasses import replace

    from geoseg.evaluation.clusters import counting_classes, lookup, match_clusters, scoring_classes

    if not options.classes:
        raise GeosegError("--match-clusters needs --classes: the reference's class list")
    reference = load_classes(options.classes)
    scoring, unmatched = scoring_classes(reference)
    matching = {"method": "Hungarian: one-to-one, maximising matched pixels (scipy linear_sum_assignment), "
                          "per scene; unmatched clusters' pixels count as errors", "scenes": []}
    for p, r in pairs:
        if is_vector(p):
            raise GeosegError("--match-clusters scores a cluster raster (geoseg cluster's NAME.clusters.tif), "
                              "not vectors", p)
        _, _, tags = _open_grid(p, "prediction")
        if "GEOSEG_CLASSES" not in tags:
            raise GeosegError("has no cluster metadata (geoseg cluster writes it)", p)
        clusters = ClassList.from_dict({"classes": json.loads(tags["GEOSEG_CLASSES"])}, p)
        cluster_ids = [c.id for c in clusters]
        counting = counting_classes(reference, cluster_ids)
        first, _, _ = evaluate_scene(p, r, replace(options, object_classes=(), classes=None), runner, None, counting)
        mapping = match_clusters(first.conf.px, [c.id for c in reference], cluster_ids)
        res, _, codes = evaluate_scene(p, r, options, runner, work if options.audit else None, scoring,
                                       lookup(mapping, unmatched))
        results.append(res)
        audits.append((res, codes))
        names = {c.id: c.name for c in reference}
        matching["scenes"].append({
            "scene": res.name,
            "clusters": {clusters.by_id(k).name: names[v] for k, v in sorted(mapping.items())},
            "unmatched": [c.name for c in clusters if c.id not in mapping],
        })
    return scoring, matching
