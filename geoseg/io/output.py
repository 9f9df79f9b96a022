"""Writing class and probability rasters: temporary tiled GeoTIFFs, then COGs.

Chunks are written into a temporary tiled GeoTIFF (ZSTD level 1, the fastest
codec measured here for uint8 labels) beside the final file. When every chunk
is in, it is copied into a Cloud-Optimized GeoTIFF (class overviews by NEAREST
or MODE, never averaged) under another temporary name, which is then renamed
into place. A failure leaves no partial output.

NEAREST overviews are cut from each chunk as it is written (every overview
pixel takes one source pixel, which lies in exactly one chunk), into one
temporary GeoTIFF per level; the COG is then copied from a VRT that lists
them as its overviews, so the final copy does not resample the whole raster.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import secrets
import shutil
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.windows import Window

from geoseg.classes import NODATA, ClassList
from geoseg.errors import GeosegError
from geoseg.io.raster import SceneInfo

BLOCK = 512
log = logging.getLogger("geoseg")


# Every temporary file or folder geoseg writes is named ``.NAME.geoseg-tmp-PID-UNIQUE.TAG``: the
# owner's PID in the name tells a later run whether the owner is still alive (see clean_stale).
_TMP = re.compile(r"\.geoseg-tmp-(\d+)-")


def tmp_name(final: Path, tag: str) -> Path:
    """A hidden temporary name beside ``final``, unique to this process and thread.

    ``;`` and ``!`` in the final name become ``_`` here: pyogrio parses a file name as a URI, and cuts it at
    either (a scene called ``a;b.tif`` would have its GeoPackage written as ``a``). The rename to the final
    name is plain ``os.replace``."""
    safe = final.name.replace(";", "_").replace("!", "_")
    return final.with_name(f".{safe}.geoseg-tmp-{os.getpid()}-{threading.get_ident()}.{tag}")


def tmp_folder(parent: Path, tag: str) -> Path:
    """A new hidden temporary folder in ``parent`` under the same scheme (mode from the umask)."""
    path = parent / f".{tag}.geoseg-tmp-{os.getpid()}-{secrets.token_hex(4)}"
    path.mkdir()
    return path


def pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


def is_stale(path: Path) -> bool:
    """A geoseg temporary whose owner process is gone (killed, crashed, out of power)."""
    m = _TMP.search(path.name)
    return bool(m) and not pid_alive(int(m.group(1)))


def clean_stale(folder: Path) -> list[Path]:
    """Remove the temporaries that dead geoseg processes left in ``folder``; a live run's are kept."""
    removed = []
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        if p.name.startswith(".") and is_stale(p):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed.append(p)
    if removed:
        log.info("%s: removed %d temporaries of dead runs", folder, len(removed))
    return removed


class ChunkWriter:
    """A temporary tiled GeoTIFF written chunk by chunk (thread-safe)."""

    def __init__(self, final: Path, info: SceneInfo, count: int, nodata: int | None,
                 colormap: dict | None = None, nearest_overviews: bool = False, dtype: str = "uint8") -> None:
        self.final = final
        self.tmp = tmp_name(final, "chunks.tif")
        self.height, self.width = info.height, info.width
        self._lock = threading.Lock()
        self._levels: list[tuple[int, Path, rasterio.io.DatasetWriter]] = []
        profile = dict(
            driver="GTiff", width=info.width, height=info.height, count=count, dtype=dtype,
            nodata=nodata, crs=info.crs, transform=info.transform, tiled=True,
            blockxsize=BLOCK, blockysize=BLOCK, compress="ZSTD", zstd_level=1,
            interleave="band", bigtiff="IF_SAFER",
        )
        try:
            self._ds = rasterio.open(self.tmp, "w", **profile)
            if colormap is not None:  # must precede pixel writes: it sets the TIFF photometric tag
                self._ds.write_colormap(1, colormap)
            for f in overview_factors(info.height, info.width) if nearest_overviews else ():
                path = tmp_name(final, f"ovr{f}.tif")
                h, w = math.ceil(info.height / f), math.ceil(info.width / f)
                self._levels.append((f, path, rasterio.open(path, "w", **dict(profile, width=w, height=h))))
        except (rasterio.errors.RasterioError, OSError) as exc:
            self.discard()
            raise write_error(exc, final) from None
        except BaseException:  # an interrupt between creating a file and keeping its handle
            self.discard()
            raise

    def write(self, arr: np.ndarray, window: Window) -> None:
        arr = arr if arr.ndim == 3 else arr[None]
        levels = [(ds, *_nearest_part(arr, window, f, self.height, self.width)) for f, _, ds in self._levels]
        with self._lock:
            try:
                self._ds.write(arr, window=window)
                for ds, part, win in levels:
                    if part.size:
                        ds.write(part, window=win)
            except (rasterio.errors.RasterioError, OSError) as exc:
                raise write_error(exc, self.final) from None

    def close(self) -> rasterio.io.DatasetWriter:
        for _, _, level in self._levels:
            if not level.closed:
                level.close()
        ds = self._ds
        if not ds.closed:
            ds.close()
        return ds

    def discard(self) -> None:
        for _, _, level in self._levels:
            if not level.closed:
                level.close()
        if hasattr(self, "_ds") and not self._ds.closed:
            self._ds.close()
        # every temporary of this writer shares the prefix (chunks, overview levels, VRT, COG), including
        # a file an interrupt caught between its creation and its handle being kept
        prefix = self.tmp.name[: -len("chunks.tif")]
        for path in self.final.parent.iterdir():
            if path.name.startswith(prefix):
                path.unlink(missing_ok=True)

    def _source_with_overviews(self) -> Path:
        """A VRT of the temporary raster that lists the per-level temporary rasters as its overviews."""
        vrt = tmp_name(self.final, "vrt")
        rasterio.shutil.copy(self.tmp, vrt, driver="VRT")
        tree = ET.parse(vrt)
        for band in tree.getroot().iter("VRTRasterBand"):
            for _, path, _ in self._levels:
                ov = ET.SubElement(band, "Overview")
                ET.SubElement(ov, "SourceFilename", relativeToVRT="0").text = str(path.resolve())
                ET.SubElement(ov, "SourceBand").text = band.get("band")
        tree.write(vrt)
        return vrt

    def finish_cog(self, decorate, resampling: str) -> Path:
        """Decorate the temporary file, copy it to a COG, check both, and rename it into place."""
        try:
            with self._lock:
                decorate(self._ds)
                self.close()
            for path in [self.tmp, *(p for _, p, _ in self._levels)]:
                verify_tiff(path, self.final)
            partial = tmp_name(self.final, "cog.tif")
            source, options = self.tmp, dict(OVERVIEW_RESAMPLING=resampling)
            if self._levels and resampling == "NEAREST":
                source, options = self._source_with_overviews(), dict(OVERVIEWS="FORCE_USE_EXISTING")
            try:
                with rasterio.Env(GDAL_NUM_THREADS="ALL_CPUS"):
                    rasterio.shutil.copy(
                        source, partial, driver="COG", COMPRESS="DEFLATE", BLOCKSIZE=BLOCK,
                        NUM_THREADS="ALL_CPUS", BIGTIFF="IF_SAFER", **options,
                    )
                verify_tiff(partial, self.final)
                os.replace(partial, self.final)
            except (rasterio.errors.RasterioError, OSError) as exc:
                raise write_error(exc, self.final) from None
            finally:
                partial.unlink(missing_ok=True)
        finally:
            self.discard()
        return self.final


def write_error(exc: Exception, final: Path) -> GeosegError:
    """One line for a failed write; the disk being full is named as such."""
    try:
        free = shutil.disk_usage(final.parent).free
    except OSError:
        free = None
    if free is not None and free < 1 << 20:
        return GeosegError(f"cannot write output: no space left on the device ({free} bytes free)", final)
    return GeosegError(f"cannot write output ({' '.join(str(exc).split())[:200]})", final)


def vector_write_errors() -> tuple[type[BaseException], ...]:
    """What pyogrio and SQLite raise when a GeoPackage cannot be written (a full or read-only disk)."""
    import sqlite3

    import pyogrio.errors as pe

    return (pe.DataSourceError, pe.DataLayerError, pe.FeatureError, pe.FieldError, pe.GeometryError,
            sqlite3.Error, OSError)


@contextlib.contextmanager
def replacing(final: Path, tag: str) -> Iterator[Path]:
    """A temporary name for ``final`` (:func:`tmp_name`), renamed to it when the block succeeds and removed
    when it fails; a failed write (a full or read-only disk) becomes one line naming ``final``."""
    tmp = tmp_name(final, tag)
    try:
        yield tmp
        os.replace(tmp, final)
    except vector_write_errors() as exc:
        tmp.unlink(missing_ok=True)
        raise write_error(exc, final) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def verify_tiff(path: Path, final: Path) -> None:
    """Every tile of every band and overview is in the file, whole: writes GDAL could only report as log lines
    (a full disk while flushing its cache) are caught here, before anything is renamed into place.

    A tile GDAL failed to write has offset 0 (a sparse tile reads as zeros) or ends past the file's end.
    """
    size = os.path.getsize(path)
    try:
        with rasterio.open(path) as src:
            n_overviews = len(src.overviews(1))
        for level in range(-1, n_overviews):
            opts = {} if level < 0 else {"OVERVIEW_LEVEL": level}
            with rasterio.open(path, **opts) as src:
                bw, bh = src.block_shapes[0][1], src.block_shapes[0][0]
                for b in range(1, src.count + 1):
                    for row in range(-(-src.height // bh)):
                        for col in range(-(-src.width // bw)):
                            off = src.get_tag_item(f"BLOCK_OFFSET_{col}_{row}", "TIFF", bidx=b)
                            n = src.get_tag_item(f"BLOCK_SIZE_{col}_{row}", "TIFF", bidx=b)
                            if not off or not n or int(off) == 0 or int(off) + int(n) > size:
                                raise GeosegError("cannot write output: the file is incomplete (was the disk "
                                                  f"full?): tile {col},{row} of band {b} is missing", final)
    except rasterio.errors.RasterioError as exc:
        raise write_error(exc, final) from None


def overview_factors(height: int, width: int) -> list[int]:
    """The COG driver's overview levels: halving until the level fits in one block."""
    factors, f, size = [], 1, max(height, width)
    while size > BLOCK:
        f *= 2
        size = math.ceil(max(height, width) / f)
        factors.append(f)
    return factors


def _nearest_part(arr: np.ndarray, window: Window, f: int, height: int, width: int) -> tuple[np.ndarray, Window]:
    """The pixels of overview level ``f`` whose source lies in ``window``, and where they go.

    Overview pixel ``i`` takes source pixel ``min(i * f + f // 2, size - 1)``
    along each axis: the centre of its footprint, clamped at the scene's edge.
    """
    def axis(start: int, n: int, size: int) -> tuple[int, np.ndarray]:
        lo = max(0, -(-(start - f // 2) // f))
        hi = math.ceil(size / f) if start + n == size else max(lo, -(-(start + n - f // 2) // f))
        return lo, np.minimum(np.arange(lo, hi) * f + f // 2, size - 1) - start

    r0, c0 = int(window.row_off), int(window.col_off)
    lo_r, rows = axis(r0, arr.shape[1], height)
    lo_c, cols = axis(c0, arr.shape[2], width)
    return arr[:, rows[:, None], cols[None, :]], Window(lo_c, lo_r, len(cols), len(rows))


def decorate_classes(classes: ClassList):
    """Band description and class metadata of a class raster (the colour map is set at creation)."""

    def apply(ds) -> None:
        ds.set_band_description(1, "class")
        ds.update_tags(GEOSEG_CLASSES=json.dumps(classes.to_dict()["classes"]), GEOSEG_NODATA=str(NODATA))
        ds.update_tags(1, **{f"CLASS_{c.id}": c.name for c in classes})

    return apply


def current_umask() -> int:
    """The process's umask (read without changing it where Linux allows)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def respect_umask(path: Path) -> None:
    """Give ``path`` (and everything under a folder) the modes the umask allows.

    ``tempfile.mkdtemp`` makes 0700 folders and safetensors writes 0600 files;
    renamed into place they would keep those modes, and a shared model folder
    or Dask workers running as another user could not read them.
    """
    mask = current_umask()
    paths = [path, *path.rglob("*")] if path.is_dir() else [path]
    for p in paths:
        os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~mask)


def atomic_write_text(path: Path, text: str) -> Path:
    """Write a small text file under a temporary name, then rename it into place."""
    tmp = tmp_name(path, "part")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise GeosegError(f"cannot write ({exc.strerror or exc})", path) from None
    return path


def class_sidecars(final: Path) -> tuple[Path, Path]:
    """``NAME.qml`` (QGIS's default style for ``NAME.tif``) and ``NAME.tif.aux.xml`` (GDAL's category names)."""
    return final.with_suffix(".qml"), final.with_name(final.name + ".aux.xml")


def write_class_sidecars(final: Path, classes: ClassList) -> None:
    """The class raster's legend for QGIS and its class names for every GDAL reader.

    GDAL keeps category names in the raster's PAM side file; QGIS, ``gdalinfo``
    and other GDAL-based tools read them from there.
    """
    from xml.sax.saxutils import escape

    from geoseg.io.styles import paletted_raster_qml

    qml, aux = class_sidecars(final)
    atomic_write_text(qml, paletted_raster_qml(classes))
    names = {c.id: c.name for c in classes}
    cats = "".join(f"<Category>{escape(names.get(i, ''))}</Category>" for i in range(max(names) + 1))
    atomic_write_text(aux, '<PAMDataset>\n  <PAMRasterBand band="1">\n'
                           f"    <Description>class</Description>\n    <CategoryNames>{cats}</CategoryNames>\n"
                           "  </PAMRasterBand>\n</PAMDataset>\n")


def decorate_probabilities(classes: ClassList):
    def apply(ds) -> None:
        for i, c in enumerate(classes, start=1):
            ds.set_band_description(i, f"p({c.name})")
        ds.update_tags(GEOSEG_CLASSES=json.dumps(classes.to_dict()["classes"]), GEOSEG_PROBABILITY_SCALE="255")

    return apply


def check_writable(folder: Path) -> None:
    """Clean up dead runs' temporaries and prove ``folder`` takes a file, before any work is done."""
    try:
        clean_stale(folder)
        probe = tmp_name(folder / "write-test", "probe")
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise GeosegError(f"output directory is not writable ({exc.strerror or exc})", folder) from None


@contextlib.contextmanager
def output_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Create the output directory and check it is writable, before any work.

    If the work then fails, the folders this call created are removed again
    while they are still empty, so a refused input leaves nothing behind;
    whatever was finished (a checkpoint, a scene's outputs) stays.
    """
    out = Path(path)
    created = [d for d in (out, *out.parents) if not d.exists()]  # deepest first
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GeosegError(f"output directory is not writable ({exc.strerror or exc})", out) from None
    check_writable(out)
    try:
        yield out
    except BaseException:
        for d in created:
            try:
                d.rmdir()
            except OSError:
                break
        raise
