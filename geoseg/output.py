"""Writing class and probability rasters: temporary tiled GeoTIFFs, then COGs.

Chunks are written into a temporary tiled GeoTIFF (ZSTD level 1, the fastest
codec measured here for uint8 labels) beside the final file. When every chunk
is in, it is copied into a Cloud-Optimized GeoTIFF (class overviews by NEAREST
or MODE, never averaged) under another temporary name, which is then renamed
into place. A failure leaves no partial output.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.windows import Window

from geoseg.classes import NODATA, ClassList
from geoseg.errors import GeosegError
from geoseg.raster import SceneInfo

BLOCK = 512


def _tmp_name(final: Path, tag: str) -> Path:
    return final.with_name(f".{final.name}.{os.getpid()}-{threading.get_ident()}.{tag}")


class ChunkWriter:
    """A temporary tiled GeoTIFF written chunk by chunk (thread-safe)."""

    def __init__(self, final: Path, info: SceneInfo, count: int, nodata: int | None,
                 colormap: dict | None = None) -> None:
        self.final = final
        self.tmp = _tmp_name(final, "chunks.tif")
        self._lock = threading.Lock()
        profile = dict(
            driver="GTiff", width=info.width, height=info.height, count=count, dtype="uint8",
            nodata=nodata, crs=info.crs, transform=info.transform, tiled=True,
            blockxsize=BLOCK, blockysize=BLOCK, compress="ZSTD", zstd_level=1,
            interleave="band", bigtiff="IF_SAFER",
        )
        try:
            self._ds = rasterio.open(self.tmp, "w", **profile)
            if colormap is not None:  # must precede pixel writes: it sets the TIFF photometric tag
                self._ds.write_colormap(1, colormap)
        except (rasterio.errors.RasterioError, OSError) as exc:
            raise GeosegError(f"cannot write output ({exc})", final.parent) from None

    def write(self, arr: np.ndarray, window: Window) -> None:
        with self._lock:
            self._ds.write(arr if arr.ndim == 3 else arr[None], window=window)

    def close(self) -> rasterio.io.DatasetWriter:
        ds = self._ds
        if not ds.closed:
            ds.close()
        return ds

    def discard(self) -> None:
        self.close()
        self.tmp.unlink(missing_ok=True)

    def finish_cog(self, decorate, resampling: str) -> Path:
        """Decorate the temporary file, copy it to a COG and rename it into place."""
        try:
            with self._lock:
                decorate(self._ds)
                self.close()
            partial = _tmp_name(self.final, "cog.tif")
            try:
                with rasterio.Env(GDAL_NUM_THREADS="ALL_CPUS"):
                    rasterio.shutil.copy(
                        self.tmp, partial, driver="COG", COMPRESS="DEFLATE", BLOCKSIZE=BLOCK,
                        OVERVIEW_RESAMPLING=resampling, NUM_THREADS="ALL_CPUS", BIGTIFF="IF_SAFER",
                    )
                os.replace(partial, self.final)
            finally:
                partial.unlink(missing_ok=True)
        finally:
            self.discard()
        return self.final


def decorate_classes(classes: ClassList):
    """Band description and class metadata of a class raster (the colour map is set at creation)."""

    def apply(ds) -> None:
        ds.set_band_description(1, "class")
        ds.update_tags(GEOSEG_CLASSES=json.dumps(classes.to_dict()["classes"]), GEOSEG_NODATA=str(NODATA))
        ds.update_tags(1, **{f"CLASS_{c.id}": c.name for c in classes})

    return apply


def decorate_probabilities(classes: ClassList):
    def apply(ds) -> None:
        for i, c in enumerate(classes, start=1):
            ds.set_band_description(i, f"p({c.name})")
        ds.update_tags(GEOSEG_CLASSES=json.dumps(classes.to_dict()["classes"]), GEOSEG_PROBABILITY_SCALE="255")

    return apply
