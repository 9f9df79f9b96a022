"""GDAL's and libtiff's own messages, kept off stderr in every thread unless asked for.

rasterio routes GDAL's messages into Python logging only in threads that entered a ``rasterio.Env``
(GDAL's handler stack is per thread); in Dask's worker threads GDAL falls back to its default
handler, which prints ``Warning 1: ...`` to stderr. libtiff's I/O errors (``_tiffWriteProc: No space
left on device.`` on a full disk) bypass GDAL altogether and go to libtiff's own global handler,
which prints too. The command line says what went wrong in its own line, so without ``-v`` or
``--debug`` both go nowhere: GDAL's process-wide handler becomes its ``CPLQuietErrorHandler`` (a C
function: no Python and no GIL in GDAL's threads) and libtiff's handlers are unset. GDAL still
records every error, so rasterio raises exactly as before.

There are two GDAL builds in one process (rasterio's and pyogrio's wheels each ship one); both are
set. The handlers are found through the extension modules that link them (``dlsym`` on a module's
handle searches the libraries it loaded), so this needs no path to a library file. The modules' files
are opened without importing their packages: importing pyogrio imports geopandas and pandas (about
90 MB before the first tile); opening its extension loads its GDAL only (about 13 MB), the same
library pyogrio uses once it is imported.
"""

from __future__ import annotations

import ctypes
import importlib.machinery
import importlib.util
import logging
import sys
import threading
from pathlib import Path

log = logging.getLogger("geoseg")
_MODULES = ("rasterio._env", "pyogrio._err")  # one extension module linking each wheel's GDAL
_LOCK = threading.Lock()
_saved: list[tuple] = []  # (library, previous CPL handler, previous TIFF error handler, previous TIFF warning)


def _extension_file(name: str) -> str:
    """The file of extension module ``name`` (``package._module``), its package left unimported."""
    module = sys.modules.get(name)
    if module is not None:
        return module.__file__
    package, _, leaf = name.rpartition(".")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"no package {package}")
    for folder in spec.submodule_search_locations:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = Path(folder, leaf + suffix)
            if path.is_file():
                return str(path)
    raise ImportError(f"no extension module {name}")


def _libraries() -> list[ctypes.CDLL]:
    out = []
    for name in _MODULES:
        try:
            lib = ctypes.CDLL(_extension_file(name))
            for symbol in ("CPLSetErrorHandler", "CPLQuietErrorHandler", "TIFFSetErrorHandler",
                           "TIFFSetWarningHandler"):
                getattr(lib, symbol)
        except (ImportError, OSError, AttributeError) as exc:  # a build without them keeps its defaults
            log.debug("GDAL messages of %s stay as they are: %s", name, exc)
            continue
        for symbol in ("CPLSetErrorHandler", "TIFFSetErrorHandler", "TIFFSetWarningHandler"):
            getattr(lib, symbol).restype = ctypes.c_void_p
            getattr(lib, symbol).argtypes = [ctypes.c_void_p]
        out.append(lib)
    return out


def silence() -> int:
    """Send GDAL's and libtiff's messages nowhere, process-wide; the number of GDAL builds set."""
    with _LOCK:
        if _saved:
            return len(_saved)
        for lib in _libraries():
            quiet = ctypes.cast(lib.CPLQuietErrorHandler, ctypes.c_void_p)
            _saved.append((lib, lib.CPLSetErrorHandler(quiet), lib.TIFFSetErrorHandler(None),
                           lib.TIFFSetWarningHandler(None)))
        return len(_saved)


def restore() -> None:
    """GDAL's and libtiff's handlers as they were before :func:`silence`."""
    with _LOCK:
        while _saved:
            lib, cpl, tiff_error, tiff_warning = _saved.pop()
            lib.CPLSetErrorHandler(cpl)
            lib.TIFFSetErrorHandler(tiff_error)
            lib.TIFFSetWarningHandler(tiff_warning)
