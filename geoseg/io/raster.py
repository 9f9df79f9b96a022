"""Opening, checking and reading input scenes.

Tasks get a path and a window and open the file themselves: rasterio
datasets cannot be pickled or shared between threads.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import rasterio
from rasterio.enums import MaskFlags
from rasterio.errors import RasterioError
from rasterio.windows import Window

from geoseg.errors import GeosegError


@dataclass(frozen=True)
class SceneInfo:
    """What a task needs to know about an input scene."""

    path: str
    height: int
    width: int
    count: int
    crs: rasterio.crs.CRS | None
    transform: rasterio.Affine
    nodata: tuple[float | None, ...]  # per band, 1-based band i at index i-1
    dataset_mask: bool  # a per-dataset mask or alpha band marks nodata

    @property
    def res(self) -> tuple[float, float]:
        return abs(self.transform.a), abs(self.transform.e)


def inspect_scene(path: str | os.PathLike, bands: tuple[int, ...] = (), allow_no_crs: bool = False) -> SceneInfo:
    """Open a scene and check it can be processed; one clear error if not."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise GeosegError("no such file", path)
    if os.path.isdir(path):
        raise GeosegError("is a directory, not a raster", path)
    try:
        with rasterio.open(path) as src:
            info = SceneInfo(
                path=path,
                height=src.height,
                width=src.width,
                count=src.count,
                crs=src.crs,
                transform=src.transform,
                nodata=tuple(src.nodatavals),
                dataset_mask=any(
                    MaskFlags.per_dataset in f or MaskFlags.alpha in f for f in src.mask_flag_enums
                ),
            )
            # A truncated file often opens (its header is intact) but its last
            # blocks are gone: reading the last pixel finds that before any work.
            src.read(1, window=Window(src.width - 1, src.height - 1, 1, 1))
    except RasterioError as exc:
        raise GeosegError(f"not a readable raster ({_gdal_reason(exc)})", path) from None
    if bands and max(bands) > info.count:
        raise GeosegError(
            f"has {info.count} band{'s' if info.count != 1 else ''} but the model needs bands "
            f"{','.join(map(str, bands))}",
            path,
        )
    if info.crs is None and not allow_no_crs:
        raise GeosegError("has no CRS; pass --allow-no-crs to process it anyway", path)
    return info


def _gdal_reason(exc: Exception) -> str:
    """GDAL's own message: rasterio's "Read failed. See previous exception" hides it in the exception's cause."""
    texts = []
    seen = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        t = " ".join(str(e).split())
        if t and "See previous exception" not in t:
            texts.append(t)
        e = e.__cause__ or e.__context__
    text = texts[-1] if texts else " ".join(str(exc).split())  # the deepest: where GDAL said what went wrong
    return text if len(text) < 200 else text[:197] + "..."


def read_window(
    info: SceneInfo, window: Window, bands: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Read ``bands`` in ``window`` in their own dtype, and a mask of valid pixels.

    A pixel is valid when at least one of the bands is not nodata.
    """
    try:
        with rasterio.Env(GDAL_NUM_THREADS="ALL_CPUS"):
            src = _thread_dataset(info.path)
            data = src.read(indexes=list(bands), window=window)
            if info.dataset_mask:
                valid = src.read_masks(bands[0], window=window) > 0
            else:
                valid = _valid_from_nodata(data, [info.nodata[b - 1] for b in bands])
    except RasterioError as exc:
        raise GeosegError(f"read failed at {window!r} ({_gdal_reason(exc)})", info.path) from None
    return data, valid


_LOCAL = threading.local()
_HANDLES_PER_THREAD = 4


def _thread_dataset(path: str) -> rasterio.io.DatasetReader:
    """This thread's open handle of ``path``, kept between reads (a few per thread, least recently used out).

    Closing a dataset drops its decoded blocks from GDAL's cache, and the
    blocks at a chunk's edges are also read by its neighbours; a kept handle
    decodes them once. rasterio datasets must not be shared between threads,
    so each thread has its own. A file that changed since it was opened
    (modification time, size or inode) is opened again.
    """
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_mtime_ns, st.st_size, st.st_ino)
    handles = getattr(_LOCAL, "handles", None)
    if handles is None:
        handles = _LOCAL.handles = OrderedDict()
    src = handles.get(key)
    if src is None or src.closed:
        for old in [k for k in handles if k[0] == key[0]]:
            handles.pop(old).close()
        src = handles[key] = rasterio.open(path)
        while len(handles) > _HANDLES_PER_THREAD:
            handles.popitem(last=False)[1].close()
    handles.move_to_end(key)
    return src


def _valid_from_nodata(data: np.ndarray, nodata: list[float | None]) -> np.ndarray:
    """Valid where at least one band holds a value; NaN is never a value, declared as nodata or not."""
    floating = np.issubdtype(data.dtype, np.floating)
    if all(nd is None for nd in nodata) and not floating:
        return np.ones(data.shape[1:], dtype=bool)
    valid = np.zeros(data.shape[1:], dtype=bool)
    for band, nd in zip(data, nodata):
        if nd is None or np.isnan(nd):
            ok = ~np.isnan(band) if floating else np.ones(band.shape, dtype=bool)
        else:
            ok = band != np.asarray(nd).astype(band.dtype)
            if floating:
                ok &= ~np.isnan(band)
        valid |= ok
    if floating:
        np.nan_to_num(data, copy=False, nan=0.0)  # a valid pixel's NaN bands must not reach the model
    return valid


def pixel_placement(crs, transform: rasterio.Affine) -> rasterio.Affine:
    """Where a raster's pixels lie on a map: its transform, or QGIS's placement of a non-georeferenced raster.

    GDAL gives an image without georeferencing the identity transform (rows
    growing downwards); QGIS shows it with column ``c``, row ``r`` at ``(c, -r)``,
    so polygons written in that convention sit on the image there.
    """
    if crs is None and transform.is_identity:
        return rasterio.Affine(1.0, 0.0, 0.0, 0.0, -1.0, 0.0)
    return transform


def ground_sample_distance(info: SceneInfo) -> float | None:
    """Pixel size in metres: CRS units for a projected CRS, geodesic at the scene centre for a geographic one."""
    if info.crs is None:
        return None
    if info.crs.is_projected:
        factor = info.crs.linear_units_factor[1] if info.crs.linear_units_factor else 1.0
        return float(np.sqrt(info.res[0] * info.res[1])) * float(factor)
    from pyproj import Geod

    geod = Geod(ellps="WGS84")
    cx, cy = info.transform * (info.width / 2, info.height / 2)
    dx, dy = info.res
    _, _, ew = geod.inv(cx, cy, cx + dx, cy)
    _, _, ns = geod.inv(cx, cy, cx, cy + dy)
    return float(np.sqrt(abs(ew) * abs(ns)))


GDAL_CACHE_MB = 32


@contextlib.contextmanager
def gdal_cache(megabytes: int = GDAL_CACHE_MB):
    """Bound GDAL's block cache for a run, unless ``GDAL_CACHEMAX`` is set in the environment.

    GDAL's default is 5% of RAM (1.2 GB on a 24 GB machine). Blocks are read once
    in aligned strips and written once, so a small cache costs nothing, while the
    default lets a long run's cached output blocks grow with the scene.
    """
    if "GDAL_CACHEMAX" in os.environ:
        yield
        return
    with rasterio.Env(GDAL_CACHEMAX=megabytes * 2**20):
        yield
