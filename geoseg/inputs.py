"""Turning the user's files, folders and globs into a list of scenes."""

from __future__ import annotations

import glob
import os
from pathlib import Path

from geoseg.errors import GeosegError

RASTER_SUFFIXES = (".tif", ".tiff")


def resolve_inputs(inputs: list[str] | str) -> list[str]:
    """Scenes from files, folders (their ``*.tif``/``*.tiff``) and glob patterns, in order."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [os.fspath(inputs)]
    scenes: list[str] = []
    for item in inputs:
        item = os.fspath(item)
        if glob.has_magic(item):
            matches = sorted(glob.glob(item))
            if not matches:
                raise GeosegError("the pattern matches no file", item)
            scenes.extend(matches)
        elif os.path.isdir(item):
            found = sorted(str(p) for p in Path(item).iterdir()
                           if p.is_file() and p.suffix.lower() in RASTER_SUFFIXES and not p.name.startswith("."))
            if not found:
                raise GeosegError(f"folder holds no GeoTIFF ({', '.join('*' + s for s in RASTER_SUFFIXES)})", item)
            scenes.extend(found)
        elif not os.path.exists(item):
            raise GeosegError("no such file or folder", item)
        else:
            scenes.append(item)
    if not scenes:
        raise GeosegError("no input scenes given")
    return list(dict.fromkeys(scenes))


def output_stem(path: str | os.PathLike) -> str:
    """``scenes/a.tif`` -> ``a``."""
    name = Path(path).name
    for suffix in RASTER_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem
