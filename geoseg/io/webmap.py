"""Web-map inputs: XYZ tile services, WMS and WMTS read through GDAL's WMS driver, for an AOI, at the model's GSD.

``geoseg predict MODEL service.xml --aoi area.gpkg -o out/`` takes any GDAL raster source that is not a local
file: a GDAL WMS/WMTS service description (an XML file, or the XML itself: ``<GDAL_WMS>...``), a
``WMS:``/``WMTS:`` connection string, or a ``/vsicurl/`` URL. The AOI's bounding box, in the local UTM zone
of its centre, at the bundle's pixel size, is read through a warped view of the service (bilinear), chunk
by chunk: GDAL requests only the tiles those windows touch. The result is written as
``OUT/NAME.webmap.tif`` (under a temporary name first), which is then predicted like any scene; a later
run finds it and fetches nothing again.

HTTP: a window whose tiles fail (an HTTP error, no answer within ``GDAL_HTTP_TIMEOUT``, 30 s) is read
again ``GDAL_HTTP_MAX_RETRY`` times (3), after a delay of ``GDAL_HTTP_RETRY_DELAY`` (1 s) that doubles
each time; GDAL's own retries of single requests (429, 500, 502, 503, 504) use the same settings. Any
of these set in the environment wins. A failed request is one line naming the service, and nothing is left behind.
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path

import numpy as np

from geoseg.errors import GeosegError

WEB_PREFIXES = ("WMS:", "WMTS:", "<GDAL_WMS", "<GDAL_WMTS", "/vsicurl/", "http://", "https://")
HTTP_DEFAULTS = {"GDAL_HTTP_MAX_RETRY": "3", "GDAL_HTTP_RETRY_DELAY": "1", "GDAL_HTTP_TIMEOUT": "30",
                 "GDAL_HTTP_CONNECTTIMEOUT": "15",
                 # tile renderers answer 500 when overloaded, as well as GDAL's defaults (429, 502, 503, 504)
                 "GDAL_HTTP_RETRY_CODES": "429,500,502,503,504"}
CHUNK = 1024


def is_web_source(item: str | os.PathLike) -> bool:
    """A GDAL web-map source: a WMS/WMTS connection string or XML, a URL, or an XML service file."""
    s = os.fspath(item).lstrip()
    if s.startswith(WEB_PREFIXES):
        return True
    if s.lower().endswith(".xml") and os.path.isfile(s):
        with open(s, errors="replace") as f:
            head = f.read(4096)
        return "<GDAL_WMS" in head or "<GDAL_WMTS" in head
    return False


def source_name(item: str) -> str:
    """Output names for a web source: an XML file's stem, else ``webmap-`` and a hash of the source."""
    if os.path.isfile(item):
        return Path(item).stem
    return "webmap-" + hashlib.sha1(item.encode()).hexdigest()[:10]


def http_env() -> dict:
    return {k: os.environ.get(k, v) for k, v in HTTP_DEFAULTS.items()}


def aoi_grid(aoi: str, gsd: float):
    """The AOI's bounding box on a grid of ``gsd`` metres in its local UTM zone: (crs, transform, width, height)."""
    import geopandas as gpd
    from rasterio import Affine

    try:
        frame = gpd.read_file(aoi)
    except Exception as exc:  # pyogrio raises DataSourceError and friends
        raise GeosegError(f"--aoi: not a readable vector file ({' '.join(str(exc).split())[:160]})", aoi) from None
    if frame.empty or frame.crs is None:
        raise GeosegError("--aoi holds no features" if frame.empty else "--aoi has no CRS", aoi)
    utm = frame.to_crs(4326).estimate_utm_crs()
    x0, y0, x1, y1 = frame.to_crs(utm).total_bounds
    x0, y0 = math.floor(x0 / gsd) * gsd, math.floor(y0 / gsd) * gsd
    x1, y1 = math.ceil(x1 / gsd) * gsd, math.ceil(y1 / gsd) * gsd
    width, height = max(1, round((x1 - x0) / gsd)), max(1, round((y1 - y0) / gsd))
    return utm, Affine(gsd, 0, x0, 0, -gsd, y1), width, height


def fetch(source: str, aoi: str, gsd: float, folder: Path, name: str | None = None) -> Path:
    """``OUT/NAME.webmap.tif``: the AOI of ``source`` at ``gsd`` metres (reused when it is there)."""
    import rasterio
    from rasterio.errors import RasterioError
    from rasterio.vrt import WarpedVRT
    from rasterio.windows import Window

    from geoseg.io.output import tmp_name

    final = folder / f"{name or source_name(source)}.webmap.tif"
    if final.exists():
        return final  # fetched by an earlier run: nothing is requested again
    crs, transform, width, height = aoi_grid(aoi, gsd)
    tmp = tmp_name(final, "tif")
    try:
        with rasterio.Env(**http_env()):
            try:
                src = rasterio.open(source)
            except RasterioError as exc:
                raise GeosegError(f"cannot open the web map ({_gdal_message(exc)})", _short(source)) from None
            with src, WarpedVRT(src, crs=crs, transform=transform, width=width, height=height,
                                resampling=rasterio.enums.Resampling.bilinear) as vrt:
                count = min(vrt.count, 3)  # an alpha band is not imagery
                profile = dict(driver="GTiff", width=width, height=height, count=count, dtype=vrt.dtypes[0],
                               crs=crs, transform=transform, tiled=True, blockxsize=512, blockysize=512,
                               compress="DEFLATE", photometric="RGB" if count == 3 else "MINISBLACK")
                with rasterio.open(tmp, "w", **profile) as dst:
                    for r in range(0, height, CHUNK):
                        for c in range(0, width, CHUNK):
                            win = Window(c, r, min(CHUNK, width - c), min(CHUNK, height - r))
                            arr = _read_retrying(vrt, count, win, source)
                            dst.write(np.ascontiguousarray(arr), window=win)
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return final


def _read_retrying(vrt, count: int, win, source: str) -> np.ndarray:
    """One window, read again after a failure (GDAL's WMS driver fetches a window's tiles together and does
    not retry them itself), ``GDAL_HTTP_MAX_RETRY`` times, the delay doubling from ``GDAL_HTTP_RETRY_DELAY``."""
    import time

    from rasterio.errors import RasterioError

    env = http_env()
    retries, delay = int(float(env["GDAL_HTTP_MAX_RETRY"])), float(env["GDAL_HTTP_RETRY_DELAY"])
    for attempt in range(retries + 1):
        try:
            return vrt.read(list(range(1, count + 1)), window=win)
        except RasterioError as exc:
            if attempt == retries:
                raise GeosegError(f"the web map failed after {retries + 1} tries ({_gdal_message(exc)})",
                                  _short(source)) from None
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


def _gdal_message(exc: BaseException) -> str:
    """GDAL's own words: rasterio's "Read failed. See previous exception" carries them in its cause."""
    while exc.__cause__ is not None and "previous exception" in str(exc):
        exc = exc.__cause__
    if "previous exception" in str(exc):  # a warped read keeps no cause: GDAL's reason is logged under -v
        return "its tiles could not be downloaded; -v shows GDAL's reason"
    return " ".join(str(exc).split())[:300]


def _short(source: str) -> str:
    s = " ".join(source.split())
    return s if len(s) <= 120 else s[:117] + "..."
