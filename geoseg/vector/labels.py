"""Class labels on a raster grid: from class rasters or from vector files, window by window.

Used by evaluation (references and vector predictions) and by training (labels
rasterized on the fly onto each chip). Vector features are reprojected once to
the grid's CRS, line features can be buffered by a width in metres (in a local
UTM projection when the CRS is geographic), and each window rasterizes only the
features its bounds touch, with ``all_touched=False``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
import shapely
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from geoseg.classes import NODATA, ClassList, slugify
from geoseg.errors import GeosegError

log = logging.getLogger("geoseg")
VECTOR_SUFFIXES = (".gpkg", ".geojson", ".json", ".shp", ".fgb")


def is_vector(path) -> bool:
    return Path(path).suffix.lower() in VECTOR_SUFFIXES


@dataclass(frozen=True)
class Grid:
    """A raster grid: CRS, transform and size."""

    crs: object
    transform: rasterio.Affine
    width: int
    height: int

    @property
    def bounds(self):
        return rasterio.transform.array_bounds(self.height, self.width, self.transform)

    @classmethod
    def of(cls, path) -> Grid:
        with rasterio.open(path) as src:
            return cls(src.crs, src.transform, src.width, src.height)


@dataclass(frozen=True)
class RasterLabels:
    """A class raster, read directly or reprojected (nearest neighbour) onto the grid."""

    path: str
    warp: bool
    nodata: float | None

    def read(self, grid: Grid, win: Window) -> np.ndarray:
        from rasterio.vrt import WarpedVRT

        with rasterio.open(self.path) as src:
            if not self.warp:
                arr = src.read(1, window=win, boundless=True, fill_value=NODATA)
            else:
                with WarpedVRT(src, crs=grid.crs, transform=grid.transform, width=grid.width, height=grid.height,
                               resampling=rasterio.enums.Resampling.nearest,
                               nodata=self.nodata if self.nodata is not None else NODATA) as vrt:
                    arr = vrt.read(1, window=win)
        out = arr.astype(np.int32)
        if self.nodata is not None:
            out[arr == self.nodata] = NODATA
        return out


@dataclass(frozen=True)
class VectorLabels:
    """Features in the grid's CRS with integer class ids; pixels no feature covers get ``fill``.

    Where features overlap, later ones win.
    """

    geoms: tuple
    ids: tuple[int, ...]
    fill: int
    _tree: list = field(default_factory=list, repr=False, compare=False)

    def _index(self) -> shapely.STRtree:
        if not self._tree:
            self._tree.append(shapely.STRtree(list(self.geoms)))
        return self._tree[0]

    def __getstate__(self):
        return {"geoms": self.geoms, "ids": self.ids, "fill": self.fill, "_tree": []}

    def __setstate__(self, state):
        for k, v in state.items():
            object.__setattr__(self, k, v)

    def read(self, grid: Grid, win: Window) -> np.ndarray:
        from rasterio.features import rasterize

        t = window_transform(win, grid.transform)
        h, w = int(win.height), int(win.width)
        if not self.geoms:
            return np.full((h, w), self.fill, dtype=np.int32)
        box = shapely.box(*rasterio.transform.array_bounds(h, w, t))
        hits = sorted(self._index().query(box, predicate="intersects"))
        if not hits:
            return np.full((h, w), self.fill, dtype=np.int32)
        return rasterize(((self.geoms[i], self.ids[i]) for i in hits), out_shape=(h, w), transform=t,
                         fill=self.fill, all_touched=False, dtype="int32")


def read_instances(labels: VectorLabels, grid: Grid, win: Window) -> tuple[np.ndarray, dict[int, int]]:
    """Each feature burnt with its own number (1..; 0 where none), and each number's class id: one instance
    per feature, clipped by the window's edge."""
    from rasterio.features import rasterize

    t = window_transform(win, grid.transform)
    h, w = int(win.height), int(win.width)
    box = shapely.box(*rasterio.transform.array_bounds(h, w, t))
    hits = sorted(labels._index().query(box, predicate="intersects")) if labels.geoms else []
    if not hits:
        return np.zeros((h, w), dtype=np.int32), {}
    ids = rasterize(((labels.geoms[i], i + 1) for i in hits), out_shape=(h, w), transform=t, fill=0,
                    all_touched=False, dtype="int32")
    return ids, {i + 1: int(labels.ids[i]) for i in hits}


def read_vectors(path: str, crs, class_field: str | None, classes: ClassList, role: str,
                 constant: str | None = None, mapping: dict | None = None,
                 buffers: dict[str, float] | None = None, strict: bool = False):
    """Features of ``path`` reprojected to ``crs``, with class ids.

    Classes come from ``constant`` (every feature), else ``class_field`` (ids or
    names, through ``mapping`` if given), else a ``class_id`` field, else the only
    vectorized class. ``buffers`` maps class names to a buffer in metres applied
    to line (and point) features. Values outside the class list are warned about
    and left out, or with ``strict`` are an error.
    """
    import geopandas as gpd
    import pyogrio

    from geoseg.io.inputs import ogr_path

    source = ogr_path(path)
    try:
        layers = [n for n, _ in pyogrio.list_layers(source) if n != "layer_styles"]
        frames = [pyogrio.read_dataframe(source, layer=n) for n in layers]
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError, OSError) as exc:
        raise GeosegError(f"not a readable vector file ({exc})", path) from None
    frames = [f for f in frames if isinstance(f, gpd.GeoDataFrame)]
    if not frames:
        raise GeosegError("holds no vector layer", path)
    gdf = gpd.pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    gdf = gpd.GeoDataFrame(gdf, geometry="geometry", crs=frames[0].crs)
    if len(gdf) == 0 and role != "prediction":  # an empty prediction is a model that found nothing
        raise GeosegError(f"the {role} holds no features", path)
    if gdf.crs is None:
        raise GeosegError(f"the {role} has no CRS", path)
    field_name = class_field or ("class_id" if "class_id" in gdf.columns else None)
    if constant is not None:
        ids = map_classes([constant], classes, "--reference-class")
        if ids[0] < 0:
            raise GeosegError(f"class {constant!r} is not in the class list ({', '.join(classes.names)})")
        ids = np.full(len(gdf), ids[0])
    elif field_name is None:
        only = [c for c in classes if c.vectorize]
        if len(only) != 1:
            raise GeosegError(f"pass --class-field to say which field holds the classes (fields: "
                              f"{', '.join(c for c in gdf.columns if c != 'geometry')})", path)
        ids = np.full(len(gdf), only[0].id)
    else:
        if field_name not in gdf.columns:
            fields = ", ".join(c for c in gdf.columns if c != "geometry")
            raise GeosegError(f"has no field {field_name!r}; its fields are: {fields}", path)
        values = gdf[field_name].tolist()
        if mapping:
            values = [mapping.get(str(v), mapping.get(v, v)) for v in values]
        ids = map_classes(values, classes, path, strict=strict)
        if len(ids) and not (ids >= 0).any():
            raise GeosegError(f"no value of field {field_name!r} maps to a class: it holds "
                              f"{_few(sorted({str(v) for v in values}, key=_value_order))}; the classes are "
                              f"{', '.join(f'{c.id} {c.name}' for c in classes)}", path)
    keep = ids >= 0
    gdf, ids = gdf[keep], ids[keep]
    if buffers:
        gdf = _buffer_lines(gdf, ids, classes, buffers)
    gdf = gdf.to_crs(crs)
    geoms = gdf.geometry.values
    ok = ~(shapely.is_empty(geoms) | shapely.is_missing(geoms))
    return tuple(geoms[ok]), tuple(int(i) for i in ids[ok])


def _buffer_lines(gdf, ids: np.ndarray, classes: ClassList, buffers: dict[str, float]):
    """Buffer non-polygon features of the given classes by metres, in a local metric CRS."""
    by_id = {}
    for name, metres in buffers.items():
        cid = map_classes([name], classes, "buffer")[0]
        if cid < 0:
            raise GeosegError(f"buffer class {name!r} is not in the class list ({', '.join(classes.names)})")
        by_id[cid] = float(metres)
    metric = gdf.crs if gdf.crs.is_projected else gdf.estimate_utm_crs()
    local = gdf.to_crs(metric)
    unit = float(metric.axis_info[0].unit_conversion_factor) if metric.is_projected else 1.0
    geoms = local.geometry.values.copy()
    for i, (g, cid) in enumerate(zip(geoms, ids)):
        if cid in by_id and g is not None and g.geom_type not in ("Polygon", "MultiPolygon"):
            geoms[i] = shapely.buffer(g, by_id[cid] / unit)
    local = local.set_geometry(geoms)
    return local


def map_classes(values: list, classes: ClassList, path: str, strict: bool = False) -> np.ndarray:
    """Class ids for ids or names in ``values``; -1 (and a warning) for values not in the list."""
    by_name = {slugify(c.name): c.id for c in classes}
    ids, unknown = [], set()
    for v in values:
        cid = None
        if isinstance(v, (bool, np.bool_)):
            cid = None
        elif isinstance(v, (int, np.integer)) or (isinstance(v, str) and v.strip().lstrip("-").isdigit()):
            cid = int(v) if classes.by_id(int(v)) else None
        elif isinstance(v, float) and v.is_integer():
            cid = int(v) if classes.by_id(int(v)) else None
        elif isinstance(v, str):
            cid = by_name.get(slugify(v))
        if cid is None:
            unknown.add(str(v))
        ids.append(-1 if cid is None else cid)
    if unknown and strict:
        raise GeosegError(f"class values not in the class list: {_few(sorted(unknown, key=_value_order))}"
                          f" (classes: {', '.join(classes.names)})", path)
    if unknown and len(unknown) < len(set(map(str, values))):
        log.warning("%s: class values not in the class list, left out: %s", path, _few(sorted(unknown, key=_value_order)))
    return np.asarray(ids, dtype=np.int64)


def _value_order(v: str):
    try:
        return (0, float(v), v)
    except ValueError:
        return (1, 0.0, v)


def _few(values: list[str], n: int = 6) -> str:
    return ", ".join(values[:n]) + (f" and {len(values) - n} more" if len(values) > n else "")
