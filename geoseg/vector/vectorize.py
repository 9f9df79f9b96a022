"""Class rasters to QGIS-ready GeoPackages, chunk by chunk, exact across seams.

Each chunk (a Dask task) labels the connected components of every class to
vectorize (4- or 8-connectivity) and traces their boundary rings in pixel
coordinates, where every vertex is an integer and pieces of one component
from neighbouring chunks share their seam edges exactly. Labelling and
tracing are compiled (:mod:`geoseg.vector.tracing`) and release the GIL, so chunks
polygonize in parallel threads; the rings become shapely polygons in one
vectorized call. The task returns its
pieces and the labels along its four edges. Components that touch no seam are
final and are written as their chunk arrives; the others are joined across
seams with a union-find over edge-adjacent labels and unioned at the end. The
result equals polygonizing the whole raster at once, and memory follows the
chunk size and the number of polygons, not the raster size.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
import shapely
from rasterio.errors import RasterioError
from rasterio.transform import Affine

from geoseg.classes import NODATA, ClassList, SegClass, default_color, load_classes, object_classes, slugify
from geoseg.errors import GeosegError
from geoseg.inference.scheduler import open_runner, progress_bar, run_graph
from geoseg.inference.tiling import Chunk, chunk_grid
from geoseg.io.inputs import output_beside
from geoseg.io.output import check_writable, tmp_name, vector_write_errors, write_error
from geoseg.io.raster import pixel_placement
from geoseg.io.styles import fill_qml, write_layer_styles
from geoseg.options import check_options
from geoseg.vector import tracing

log = logging.getLogger("geoseg")


@dataclass(frozen=True)
class VectorizeOptions:
    """Options of ``geoseg vectorize``; areas in m², lengths in metres."""

    classes: str | None = None  # a class-list YAML; default: the raster's own metadata
    min_area: float = 0.0
    fill_holes: float = 0.0
    simplify: float = 0.0
    regularize: bool = False  # building footprints with right-angled edges (geoseg.vector.regularize)
    split_touching: bool = False  # touching objects split by a watershed (geoseg.vector.split)
    split_classes: tuple[str, ...] | None = None  # classes to split (names or ids); default: the building classes
    split_depth: float = 2.0  # px: how much narrower than both objects a neck must be to split them
    connectivity: int = 4
    chunk_size: int = 2048
    workers: int | None = None
    scheduler: str | None = None
    all_classes: bool = False  # also background (vectorize: false) classes
    probabilities: str | None = None  # default: NAME.probs.tif beside NAME.classes.tif, if present
    source: str | None = None  # the ``source`` field; default: the raster's file name
    overwrite: bool = False
    allow_no_crs: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if self.connectivity not in (4, 8):
            raise GeosegError(f"--connectivity must be 4 or 8, got {self.connectivity}")
        if isinstance(self.split_depth, bool) or not isinstance(self.split_depth, (int, float)) \
                or not self.split_depth > 0:
            raise GeosegError(f"--split-depth must be a positive number of pixels, got {self.split_depth!r}")
        if isinstance(self.split_classes, str):  # one name, or several separated by commas
            object.__setattr__(self, "split_classes", tuple(n.strip() for n in self.split_classes.split(",")
                                                            if n.strip()))
        check_options(self)


@dataclass(frozen=True)
class VectorJob:
    path: str
    probs: str | None
    prob_band: tuple[tuple[int, int], ...]  # (class id, 1-based band) pairs
    exclude: tuple[int, ...]  # values never vectorized (nodata, background)
    connectivity: int


@dataclass
class Features:
    """Features as parallel arrays (geometries in pixel coordinates until written)."""

    class_id: np.ndarray  # int64
    geometry: np.ndarray  # shapely geometries (object)
    pixels: np.ndarray  # int64
    conf: np.ndarray  # summed probability per feature (float64; NaN without a probability raster)

    def __len__(self) -> int:
        return len(self.class_id)

    def take(self, idx) -> Features:
        return Features(self.class_id[idx], self.geometry[idx], self.pixels[idx], self.conf[idx])

    @staticmethod
    def concat(parts: list[Features]) -> Features:
        if not parts:
            return Features(np.zeros(0, np.int64), np.zeros(0, object), np.zeros(0, np.int64), np.zeros(0))
        return Features(*(np.concatenate([getattr(p, f) for p in parts])
                          for f in ("class_id", "geometry", "pixels", "conf")))


@dataclass
class ChunkPieces:
    """What one chunk found: polygons per component label, and the labels on its edges."""

    label_class: np.ndarray  # class id per local label (index 0: unlabelled)
    label_pixels: np.ndarray
    label_conf: np.ndarray  # summed probability per label (NaN without a probability raster)
    piece_label: np.ndarray  # component label of each polygon (several for an 8-connected component)
    piece_geom: np.ndarray  # polygons in pixel coordinates
    edges: dict[str, np.ndarray] = field(repr=False)
    values: dict[int, int] = field(default_factory=dict)  # pixel count per raster value


def _codes(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Small non-negative integer codes for a class array, and the value of each code."""
    if arr.dtype == np.uint8 or arr.dtype == np.uint16:
        return arr, np.arange(1 << (8 * arr.dtype.itemsize), dtype=np.int64)
    lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
    if lo >= 0 and hi < 65536:
        return arr.astype(np.uint16), np.arange(65536, dtype=np.int64)
    values, inv = np.unique(arr, return_inverse=True)
    return inv.reshape(arr.shape).astype(np.uint16 if len(values) <= 65536 else np.int64), values.astype(np.int64)


def polygonize_chunk(job: VectorJob, chunk: Chunk) -> ChunkPieces:
    """Label and polygonize one chunk (a Dask task); compiled kernels, no GIL held."""
    win = chunk.window
    try:
        with rasterio.open(job.path) as src:
            arr = src.read(1, window=win)
        probs = None
        if job.probs:
            with rasterio.open(job.probs) as src:
                probs = src.read([b for _, b in job.prob_band], window=win)
    except RasterioError as exc:
        raise GeosegError(f"read failed at {win!r} ({exc})", job.path) from None
    codes, code_value = _codes(arr)
    skip = np.isin(code_value, np.asarray(job.exclude, dtype=np.int64))
    counts = np.bincount(codes.ravel(), minlength=len(code_value))
    values = {int(code_value[c]): int(counts[c]) for c in np.nonzero(counts)[0]}
    lab4, code4, pixels4 = tracing.label_values(codes, skip, False)
    if job.connectivity == 8:
        labels, code8, pixels = tracing.label_values(codes, skip, True)
        group = np.zeros(len(code4), dtype=np.int32)
        group[lab4.ravel()] = labels.ravel()  # every 4-connected piece lies in one 8-connected label
        group[0] = 0
        label_code = code8
    else:
        labels, label_code, pixels, group = lab4, code4, pixels4, None
    n_labels = len(label_code)
    label_conf = np.full(n_labels, np.nan)
    if probs is not None:
        band = np.full(len(code_value), len(job.prob_band), dtype=np.intp)  # the extra zero plane
        for i, (c, _) in enumerate(job.prob_band):
            band[code_value == c] = i
        planes = np.concatenate([probs, np.zeros((1,) + probs.shape[1:], probs.dtype)])
        px = np.take_along_axis(planes, band[codes][None], axis=0)[0]
        label_conf = np.bincount(labels.ravel(), weights=px.ravel() / 255.0, minlength=n_labels)
    piece_label, piece_geom = tracing.polygons(lab4, win.col_off, win.row_off)  # integer pixel coordinates
    if group is not None:
        piece_label = group[piece_label]
    edges = {"top": labels[0].copy(), "bottom": labels[-1].copy(), "left": labels[:, 0].copy(),
             "right": labels[:, -1].copy()}
    return ChunkPieces(code_value[label_code], pixels, label_conf, piece_label, piece_geom, edges, values)


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict = {}

    def find(self, a):
        self.parent.setdefault(a, a)
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def union(self, a, b) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _group(labels: np.ndarray, geoms: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """The distinct labels (ascending) and, for each, its geometries."""
    order = np.argsort(labels, kind="stable")
    labels, first = np.unique(labels[order], return_index=True)
    return labels, np.split(geoms[order], first[1:]) if len(labels) else []


def _seam_pairs(a: np.ndarray, b: np.ndarray, ca: np.ndarray, cb: np.ndarray, diagonal: bool):
    """Label pairs facing each other across a seam (``a`` on one side, ``b`` on the other)."""
    shifts = [(slice(None), slice(None))]
    if diagonal:
        shifts += [(slice(1, None), slice(None, -1)), (slice(None, -1), slice(1, None))]
    for sa, sb in shifts:
        x, y = a[sa], b[sb]
        keep = (x > 0) & (y > 0)
        x, y = x[keep], y[keep]
        same = ca[x] == cb[y]
        yield from set(zip(x[same].tolist(), y[same].tolist()))


class _Collector:
    """Receives chunks as they finish; writes final features, holds the seam ones."""

    def __init__(self, grid: list[list[Chunk]], diagonal: bool, writer: _LayerWriter, hold_all: bool) -> None:
        self.grid, self.diagonal, self.writer, self.hold_all = grid, diagonal, writer, hold_all
        self.rows, self.cols = len(grid), len(grid[0])
        self.seams_x = np.asarray([c.window.col_off for c in grid[0][1:]], dtype=np.float64)
        self.seams_y = np.asarray([r[0].window.row_off for r in grid[1:]], dtype=np.float64)
        self.edges: dict[tuple[int, int], tuple[dict, np.ndarray]] = {}
        self.held: dict[tuple, list] = {}
        self.held_info: dict[tuple, tuple[int, int, float | None]] = {}
        self.values: dict[int, int] = defaultdict(int)
        self.lock = threading.Lock()
        # Chunks finish in any order; their features are written in row-major chunk order, so repeated runs
        # and runs with other worker counts write identical files.
        self.pending: dict[int, Features] = {}
        self.next_chunk = 0

    def seam_sides(self, c: Chunk) -> list[str]:
        sides = []
        if c.i > 0:
            sides.append("top")
        if c.i < self.rows - 1:
            sides.append("bottom")
        if c.j > 0:
            sides.append("left")
        if c.j < self.cols - 1:
            sides.append("right")
        return sides

    def __call__(self, chunk: Chunk, res: ChunkPieces) -> None:
        with self.lock:
            for v, n in res.values.items():
                self.values[v] += n
            self.edges[(chunk.i, chunk.j)] = (res.edges, res.label_class)
            on_seam = np.zeros(len(res.label_class), dtype=bool)
            for side in self.seam_sides(chunk):
                on_seam[res.edges[side]] = True
            on_seam[0] = False
            if self.hold_all:
                on_seam[:] = True
            held = on_seam[res.piece_label]
            for label, geoms in zip(*_group(res.piece_label[held], res.piece_geom[held])):
                key = (chunk.i, chunk.j, int(label))
                self.held[key] = list(geoms)
                self.held_info[key] = (int(res.label_class[label]), int(res.label_pixels[label]),
                                       float(res.label_conf[label]))
            labels, geoms = res.piece_label[~held], res.piece_geom[~held]
            if len(np.unique(labels)) < len(labels):
                # 4-connected pieces of one 8-connected label (they touch only at corners)
                labels, groups = _group(labels, geoms)
                geoms = np.asarray([g[0] if len(g) == 1 else shapely.MultiPolygon(list(g)) for g in groups] or [],
                                   dtype=object)
            self.pending[chunk.i * self.cols + chunk.j] = Features(res.label_class[labels], geoms,
                                                                    res.label_pixels[labels], res.label_conf[labels])
            while self.next_chunk in self.pending:
                self.writer.add(self.pending.pop(self.next_chunk))
                self.next_chunk += 1

    def finish(self) -> None:
        """Join held pieces across seams and hand them to the writer."""
        uf = _UnionFind()
        for key in self.held:
            uf.find(key)
        for (i, j), (edges, cls) in self.edges.items():
            if (i, j + 1) in self.edges:
                e2, c2 = self.edges[(i, j + 1)]
                for a, b in _seam_pairs(edges["right"], e2["left"], cls, c2, self.diagonal):
                    uf.union((i, j, a), (i, j + 1, b))
            if (i + 1, j) in self.edges:
                e2, c2 = self.edges[(i + 1, j)]
                for a, b in _seam_pairs(edges["bottom"], e2["top"], cls, c2, self.diagonal):
                    uf.union((i, j, a), (i + 1, j, b))
            if self.diagonal:  # pixels touching only at the corner where four chunks meet
                for (di, dj), mine, theirs in (((1, 1), edges["bottom"][-1], "top0"),
                                              ((1, -1), edges["bottom"][0], "top-1")):
                    other = self.edges.get((i + di, j + dj))
                    if other is None or mine == 0:
                        continue
                    e2, c2 = other
                    t = e2["top"][0] if theirs == "top0" else e2["top"][-1]
                    if t and cls[mine] == c2[t]:
                        uf.union((i, j, int(mine)), (i + di, j + dj, int(t)))
        groups: dict[tuple, list] = defaultdict(list)
        for key in self.held:
            groups[uf.find(key)].append(key)
        cls, geoms, pixels, conf = [], [], [], []
        for keys in sorted(sorted(ks) for ks in groups.values()):  # a fixed order, whatever order chunks came in
            infos = [self.held_info[k] for k in keys]
            cls.append(infos[0][0])
            geoms.append(merge_pieces([g for k in keys for g in self.held[k]], self.seams_x, self.seams_y))
            pixels.append(sum(x[1] for x in infos))
            conf.append(sum(x[2] for x in infos))
        self.held.clear()
        geometry = np.empty(len(geoms), dtype=object)
        geometry[:] = geoms
        self.writer.add(Features(np.asarray(cls, dtype=np.int64), geometry, np.asarray(pixels, dtype=np.int64),
                                 np.asarray(conf, dtype=np.float64)))


def merge_pieces(geoms: list, seams_x: np.ndarray, seams_y: np.ndarray) -> shapely.Geometry:
    """Join the pieces of one component that chunk seams cut apart, exactly and in near-linear time.

    Pieces are in integer pixel coordinates and meet only along seam lines. Their
    ring segments on seams are split into unit steps; a step that two pieces
    share is interior and is dropped, the rest of the linework is the
    component's boundary. ``polygonize`` turns it into faces, and the faces
    inside one of the pieces (not the holes) are the component. A general
    overlay (``union_all``) gives the same geometry 2x slower on large,
    hole-riddled components, and is used whenever the stitched area is not exact.
    """
    geoms = np.asarray(geoms, dtype=object)
    if len(geoms) == 1:
        return geoms[0]
    coords, ridx = shapely.get_coordinates(shapely.get_rings(geoms), return_index=True)
    same = ridx[1:] == ridx[:-1]
    a, b, rid = coords[:-1][same], coords[1:][same], ridx[:-1][same]
    seam = (((a[:, 0] == b[:, 0]) & np.isin(a[:, 0], seams_x))
            | ((a[:, 1] == b[:, 1]) & np.isin(a[:, 1], seams_y)))
    n = np.where(seam, np.abs(b - a).sum(axis=1), 1).astype(np.int64)
    rep = np.repeat(np.arange(len(a)), n)
    k = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
    on = seam[rep]
    unit = np.sign(b - a)[rep]
    ua = np.where(on[:, None], a[rep] + unit * k[:, None], a[rep])
    ub = np.where(on[:, None], ua + unit, b[rep])
    step_ring = rid[rep]
    keep = np.ones(len(ua), dtype=bool)
    su = np.nonzero(on)[0]
    if len(su):
        key = np.concatenate([np.minimum(ua[su], ub[su]), np.maximum(ua[su], ub[su])], axis=1)
        _, inv, cnt = np.unique(key, axis=0, return_inverse=True, return_counts=True)
        keep[su] = cnt[inv.ravel()] == 1
    kept = np.nonzero(keep)[0]
    brk = np.ones(len(kept), dtype=bool)
    brk[1:] = (np.diff(kept) != 1) | (step_ring[kept[1:]] != step_ring[kept[:-1]])
    run = np.cumsum(brk) - 1
    starts = kept[brk]
    pts = np.concatenate([ua[starts], ub[kept]])
    ids = np.concatenate([run[brk], run])
    order = np.lexsort((np.concatenate([np.full(len(starts), -1), np.arange(len(kept))]), ids))
    faces = shapely.get_parts(shapely.polygonize(shapely.linestrings(pts[order], indices=ids[order])))
    # an interior point of a component face lies in (or on the seam between) its pieces; of a hole, in none
    inside, _ = shapely.STRtree(geoms).query(shapely.point_on_surface(faces), predicate="intersects")
    sel = faces[np.unique(inside)]
    merged = sel[0] if len(sel) == 1 else shapely.MultiPolygon(list(sel))
    # Pixel-coordinate areas are exact: any face polygonize got wrong (a hole it did not
    # attach, a face missed) changes the total, and the general overlay takes over.
    if len(sel) == 0 or merged.area != shapely.area(geoms).sum():
        return shapely.union_all(geoms)
    return merged


class GroundMeasure:
    """Ground areas and lengths: planar in projected CRSs, geodesic in geographic ones."""

    def __init__(self, crs, transform: Affine) -> None:
        self.transform = transform
        self.geod = None
        self.unit = 1.0
        if crs is not None and crs.is_geographic:
            from pyproj import CRS, Geod

            ell = CRS.from_user_input(crs.to_wkt()).ellipsoid
            self.geod = Geod(a=ell.semi_major_metre, b=ell.semi_minor_metre)
        elif crs is not None:
            self.unit = float(crs.linear_units_factor[1])

    def to_crs(self, geoms):
        """Pixel coordinates to CRS coordinates (a geometry or an array of them)."""
        t = self.transform
        return shapely.transform(geoms, lambda xy: np.column_stack(
            [t.a * xy[:, 0] + t.b * xy[:, 1] + t.c, t.d * xy[:, 0] + t.e * xy[:, 1] + t.f]))

    def area_perimeter(self, geoms) -> tuple[np.ndarray, np.ndarray]:
        """Areas in m² and perimeters in m of an array of CRS geometries."""
        geoms = np.asarray(geoms, dtype=object).ravel()
        if self.geod is not None:
            pairs = [self.geod.geometry_area_perimeter(g) for g in geoms]
            return np.abs([a for a, _ in pairs]).astype(float), np.asarray([p for _, p in pairs], dtype=float)
        return shapely.area(geoms) * self.unit**2, shapely.length(geoms) * self.unit

    def metres_to_crs(self, metres: float) -> float:
        if self.geod is not None:
            return metres / 111_320.0  # degrees of latitude; simplification tolerance only
        return metres / self.unit


class _LayerWriter:
    """Buffers features per class layer and appends them to a GeoPackage."""

    FLUSH = 20_000

    def __init__(self, path: Path, classes: ClassList, crs, measure: GroundMeasure, source: str,
                 options: VectorizeOptions) -> None:
        self.path, self.classes, self.crs, self.measure = path, classes, crs, measure
        self.source, self.options = source, options
        self.buffers: dict[int, dict[str, list]] = defaultdict(lambda: defaultdict(list))
        self.written: dict[int, int] = defaultdict(int)
        self.layer_names: dict[int, str] = {}
        self.unknown: set[int] = set()
        # simplifying and regularizing need every feature at once
        self.hold: list[Features] | None = [] if options.simplify > 0 or options.regularize else None

    def layer_class(self, class_id: int) -> SegClass:
        c = self.classes.by_id(class_id)
        if c is None:
            self.unknown.add(class_id)
            c = SegClass(class_id, f"class_{class_id}", default_color(f"class_{class_id}", class_id))
        return c

    def layer_name(self, class_id: int) -> str:
        if class_id not in self.layer_names:
            slug = self.layer_class(class_id).slug
            taken = set(self.layer_names.values())
            self.layer_names[class_id] = slug if slug not in taken else f"{slug}_{class_id}"
        return self.layer_names[class_id]

    def add(self, feats: Features) -> None:
        if self.hold is not None:
            self.hold.append(feats)
            return
        self._emit(feats)

    def _emit(self, feats: Features, in_crs: bool = False) -> None:
        if not len(feats):
            return
        m, o = self.measure, self.options
        geoms = feats.geometry if in_crs else m.to_crs(feats.geometry)
        if o.fill_holes > 0:
            geoms = np.asarray([_fill_holes(g, o.fill_holes, m) for g in geoms] + [None], dtype=object)[:-1]
        areas, perims = m.area_perimeter(geoms)
        keep = (areas >= o.min_area) & ~shapely.is_empty(geoms)
        mean_conf = feats.conf / np.maximum(feats.pixels, 1)
        for cid in np.unique(feats.class_id[keep]).tolist():
            sel = keep & (feats.class_id == cid)
            buf = self.buffers[cid]
            for name, col in (("geometry", geoms), ("area_m2", areas), ("perimeter_m", perims),
                              ("mean_confidence", mean_conf)):
                buf[name].append(col[sel])
            if sum(len(g) for g in buf["geometry"]) >= self.FLUSH:
                self.flush(cid)

    def flush(self, class_id: int) -> None:
        import geopandas as gpd
        import pandas as pd
        import pyogrio

        cols = {k: np.concatenate(v) for k, v in self.buffers.pop(class_id, {}).items()}
        n = len(cols.get("geometry", []))
        if not n and self.written[class_id]:
            return
        c = self.layer_class(class_id)
        gdf = gpd.GeoDataFrame({
            "class_id": np.full(n, class_id, dtype="int32"),
            "class_name": np.full(n, c.name, dtype=object),
            "area_m2": np.asarray(cols.get("area_m2", []), dtype="float64"),
            "perimeter_m": np.asarray(cols.get("perimeter_m", []), dtype="float64"),
            # nullable: NULL in the GeoPackage when there is no probability raster
            "mean_confidence": pd.array(np.asarray(cols.get("mean_confidence", []), dtype="float64"),
                                        dtype="Float64"),
            "source": np.full(n, self.source, dtype=object),
        }, geometry=gpd.GeoSeries(cols.get("geometry", []), crs=self.crs), crs=self.crs)
        pyogrio.write_dataframe(
            gdf, self.path, layer=self.layer_name(class_id), driver="GPKG", append=self.written[class_id] > 0,
            promote_to_multi=True, geometry_type="MultiPolygon", layer_options={"SPATIAL_INDEX": "YES"},
            # GeoPackage 1.2 opens without warnings in QGIS 3.22 (GDAL 3.6) and later
            dataset_options=None if self.path.exists() else {"VERSION": "1.2"},
        )
        self.written[class_id] += n or 1

    def close(self, wanted: list[int]) -> dict[str, str]:
        """Write what is held (simplified first, if asked), empty layers for absent classes, and styles."""
        if self.hold is not None:
            held, self.hold = Features.concat(self.hold), None
            if self.options.simplify > 0:
                feats = _simplify(held, self.options.simplify, self.measure)
            else:
                feats = Features(held.class_id, self.measure.to_crs(held.geometry), held.pixels, held.conf)
            if self.options.regularize:
                feats = self._regularized(feats)
            self._emit(feats, in_crs=True)
        for cid in sorted(set(wanted) | set(self.buffers)):
            self.flush(cid)
        return {self.layer_name(cid): fill_qml(self.layer_class(cid)) for cid in sorted(self.written)}


    def _regularized(self, feats: Features) -> Features:
        """Building classes' footprints regularized (CRS geometries in and out)."""
        from geoseg.vector.regularize import regularize_footprints

        ids = [c.id for c in object_classes(self.classes)]
        sel = np.isin(feats.class_id, ids)
        if not sel.any():
            return feats
        geoms = feats.geometry.copy()
        geoms[sel] = regularize_footprints(geoms[sel], self.crs)
        return Features(feats.class_id, geoms, feats.pixels, feats.conf)


def _fill_holes(geom: shapely.Geometry, max_area: float, m: GroundMeasure) -> shapely.Geometry:
    polys = shapely.get_parts(geom)
    out = []
    for p in polys:
        holes = [shapely.Polygon(r) for r in p.interiors]
        areas = m.area_perimeter(holes)[0] if holes else []
        out.append(shapely.Polygon(p.exterior, [r for r, a in zip(p.interiors, areas) if a >= max_area]))
    return out[0] if len(out) == 1 else shapely.MultiPolygon(out)


def _simplify(feats: Features, metres: float, m: GroundMeasure) -> Features:
    """Coverage simplification of every class together: shared edges stay shared."""
    if not len(feats):
        return feats
    # Vertices at every pixel corner make the coverage's shared edges noded identically.
    geoms = m.to_crs(shapely.segmentize(feats.geometry, 1.0))
    simple = shapely.coverage_simplify(geoms, m.metres_to_crs(metres))
    bad = ~shapely.is_valid(simple)
    simple[bad] = shapely.make_valid(simple[bad])
    return Features(feats.class_id, simple, feats.pixels, feats.conf)


def resolve_classes(path: str, options_classes: str | None) -> ClassList | None:
    """The class list: ``--classes``, else the raster's geoseg metadata or colour map."""
    if options_classes:
        return load_classes(options_classes)
    with rasterio.open(path) as src:
        tags = src.tags()
        if "GEOSEG_CLASSES" in tags:
            return ClassList.from_dict({"classes": json.loads(tags["GEOSEG_CLASSES"])}, path)
        try:
            cmap = src.colormap(1)
        except ValueError:
            return None
    nodata = src.nodata
    items = [SegClass(i, f"class_{i}", "#{:02x}{:02x}{:02x}".format(*rgba[:3]))
             for i, rgba in cmap.items() if rgba[3] > 0 and i != nodata and any(rgba[:3])]
    return ClassList(tuple(items)) if items else None


def vectorize(raster: str | os.PathLike, output: str | os.PathLike, options: VectorizeOptions | None = None,
              client: object | None = None, classes: ClassList | None = None) -> Path:
    """Vectorize a class raster into a styled GeoPackage with one layer per class.

    ``classes`` overrides the class list (else ``options.classes``, else the raster's metadata).
    """
    options = options or VectorizeOptions()
    raster, output = os.fspath(raster), Path(output)
    if not os.path.exists(raster):
        raise GeosegError("no such file", raster)
    try:
        with rasterio.open(raster) as src:
            dtype, crs, transform = src.dtypes[0], src.crs, pixel_placement(src.crs, src.transform)
            height, width, nodata = src.height, src.width, src.nodata
    except RasterioError as exc:
        raise GeosegError(f"not a readable raster ({exc})", raster) from None
    if not np.issubdtype(np.dtype(dtype), np.integer):
        raise GeosegError(f"is a {dtype} raster; vectorize needs integer class ids", raster)
    if crs is None and not options.allow_no_crs:
        raise GeosegError("has no CRS; pass --allow-no-crs to vectorize it anyway", raster)
    if not output.parent.is_dir():
        raise GeosegError("output directory does not exist", output.parent)
    if output.exists() and not options.overwrite:
        raise GeosegError("already exists; pass --overwrite to replace it", output)

    classes = classes or resolve_classes(raster, options.classes) or ClassList(
        (SegClass(0, "background", "#000000", False),))
    exclude = {int(nodata)} if nodata is not None else {NODATA}
    if not options.all_classes:
        exclude |= {c.id for c in classes if not c.vectorize}
    split = _split_ids(classes, options, exclude) if options.split_touching else ()
    probs = options.probabilities or output_beside(raster, ".probs.tif")
    prob_band: tuple = ()
    if probs:
        with rasterio.open(probs) as src:
            if src.count >= len(classes) and (src.width, src.height) == (width, height):
                prob_band = tuple((c.id, i + 1) for i, c in enumerate(classes))
            else:
                probs = None
    job = VectorJob(raster, probs, prob_band, tuple(sorted(exclude | set(split))), options.connectivity)

    grid = chunk_grid(height, width, options.chunk_size)
    tiles = None
    if split:
        from geoseg.vector.split import SplitJob, split_grid, split_tile

        tiles = split_grid(height, width)
        split_job = SplitJob(raster, split, float(options.split_depth), options.connectivity, probs,
                             tuple(p for p in prob_band if p[0] in split))
    check_writable(output.parent)
    tmp = tmp_name(output, "partial.gpkg")
    measure = GroundMeasure(crs, transform)
    writer = _LayerWriter(tmp, classes, crs, measure, options.source or Path(raster).name, options)
    collector = _Collector(grid, options.connectivity == 8, writer, hold_all=False)
    bar = progress_bar(sum(len(r) for r in grid) + (tiles.n_tiles if tiles else 0), Path(raster).name,
                       options.progress)
    import dask

    delayed_chunk = dask.delayed(polygonize_chunk, pure=True)
    graph = [(c, delayed_chunk(job, c)) for row in grid for c in row]
    pieces: list = []

    def sink(chunk, res):
        collector(chunk, res)
        bar.update(1)

    def split_sink(tile, res):
        pieces.extend(res)
        bar.update(1)

    try:
        with open_runner(options.scheduler, options.workers, client) as runner:
            run_graph(graph, sink, runner)
            if tiles:
                delayed_tile = dask.delayed(split_tile, pure=True)
                run_graph([(t, delayed_tile(split_job, tiles, t.row, t.col)) for t in tiles.tiles()], split_sink,
                          runner)
        bar.close()
        collector.finish()
        if tiles:
            from geoseg.vector.split import join_tiles

            writer.add(_instance_features(join_tiles(pieces, tiles), bool(split_job.prob_band)))
            pieces.clear()
        wanted = [c.id for c in classes if c.id not in exclude]
        styles = writer.close(wanted)
        write_layer_styles(tmp, styles)
        os.replace(tmp, output)
    except vector_write_errors() as exc:
        _discard(tmp, bar)
        raise write_error(exc, output) from None
    except BaseException:
        _discard(tmp, bar)
        raise
    unknown = sorted(v for v in collector.values if v not in exclude and classes.by_id(v) is None)
    if unknown:
        log.warning("%s: class ids %s are not in the class list; vectorized as %s", raster,
                    ", ".join(map(str, unknown)), ", ".join(f"class_{v}" for v in unknown))
    return output


def _split_ids(classes: ClassList, options: VectorizeOptions, exclude: set[int]) -> tuple[int, ...]:
    """The class ids ``--split-touching`` splits (``--split-classes``, else the building classes)."""
    names = options.split_classes
    found = [c for c in object_classes(classes, names) if c.id not in exclude]
    if names is not None:
        known = {k for c in classes for k in (c.slug, str(c.id))}
        unknown = [n for n in names if slugify(str(n)) not in known and str(n) not in known]
        if unknown:
            raise GeosegError(f"--split-classes: no class {', '.join(map(repr, unknown))} in the class list "
                              f"({', '.join(c.name for c in classes)})")
    if not found:
        raise GeosegError("--split-touching: the class list has no " + (
            "such class to vectorize" if names is not None else
            f"building class ({', '.join(c.name for c in classes)}); name the classes with --split-classes"))
    return tuple(sorted(c.id for c in found))


def _instance_features(instances: list, scored: bool) -> Features:
    """Split objects as features (pixel coordinates): each object's 4-connected parts as one (multi)polygon;
    ``scored``: their scores are mean probabilities (else there is no confidence)."""
    from scipy import ndimage

    geoms, cls, pixels, conf = [], [], [], []
    for q in instances:
        parts, _ = ndimage.label(q.mask)
        _, polys = tracing.polygons(parts.astype(np.int32), q.x0, q.y0)
        geoms.append(polys[0] if len(polys) == 1 else shapely.MultiPolygon(list(polys)))
        n = int(q.mask.sum())
        cls.append(q.label)
        pixels.append(n)
        conf.append(q.score * n if scored else np.nan)
    geometry = np.empty(len(geoms), dtype=object)
    geometry[:] = geoms
    return Features(np.asarray(cls, dtype=np.int64), geometry, np.asarray(pixels, dtype=np.int64),
                    np.asarray(conf, dtype=np.float64))


def _discard(tmp: Path, bar) -> None:
    bar.close()
    for p in (tmp, tmp.with_name(tmp.name + "-journal"), tmp.with_name(tmp.name + "-wal")):
        with contextlib.suppress(OSError):
            p.unlink(missing_ok=True)


__all__ = ["VectorizeOptions", "merge_pieces", "vectorize"]

