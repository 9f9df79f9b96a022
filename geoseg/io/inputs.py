"""Turning the user's files, folders and globs into a list of scenes."""

from __future__ import annotations

import glob
import os
from pathlib import Path

from geoseg.errors import GeosegError

RASTER_SUFFIXES = (".tif", ".tiff")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")  # chips without georeferencing, taken with --allow-no-crs
# What geoseg writes: never taken as a scene, even when the output folder is the input folder.
OUTPUT_SUFFIXES = (".classes.tif", ".probs.tif", ".instances.tif", ".clusters.tif", ".segments.tif", ".panoptic.tif",
                   ".webmap.tif")


def is_geoseg_output(path: str | os.PathLike) -> bool:
    return Path(path).name.lower().endswith(OUTPUT_SUFFIXES)


def resolve_inputs(inputs: list[str] | str, allow_no_crs: bool = False) -> list[str]:
    """Scenes from files, folders (their ``*.tif``/``*.tiff``; with ``allow_no_crs`` also PNG and JPEG
    chips) and glob patterns, in order. geoseg's own outputs in a folder are never scenes."""
    suffixes = RASTER_SUFFIXES + (IMAGE_SUFFIXES if allow_no_crs else ())
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [os.fspath(inputs)]
    scenes: list[str] = []
    for item in inputs:
        item = os.fspath(item)
        if glob.has_magic(item):
            matches = sorted(m for m in glob.glob(item) if not is_geoseg_output(m))
            if not matches:
                raise GeosegError("the pattern matches no file", item)
            scenes.extend(matches)
        elif os.path.isdir(item):
            found = sorted(str(p) for p in Path(item).iterdir()
                           if p.is_file() and p.suffix.lower() in suffixes and not p.name.startswith(".")
                           and not is_geoseg_output(p))
            if not found:
                hint = "" if allow_no_crs else "; PNG/JPEG chips without georeferencing need --allow-no-crs"
                raise GeosegError(f"folder holds no GeoTIFF ({', '.join('*' + s for s in suffixes)}){hint}", item)
            scenes.extend(found)
        elif not os.path.exists(item):
            raise GeosegError("no such file or folder", item)
        else:
            scenes.append(item)
    if not scenes:
        raise GeosegError("no input scenes given")
    return list(dict.fromkeys(scenes))


def output_beside(classes: str | os.PathLike, suffix: str) -> str | None:
    """The output ``NAME<suffix>`` (``.probs.tif``, ``.instances.gpkg``) that ``predict`` wrote beside
    ``NAME.classes.tif`` (or ``NAME.panoptic.tif``), if it is there."""
    name = Path(classes).name
    for own in (".classes.tif", ".panoptic.tif"):
        if name.endswith(own):
            cand = Path(classes).with_name(name[: -len(own)] + suffix)
            if cand.is_file() and cand.name != name:
                return str(cand)
    return None


_LINKS: dict[str, str] = {}


def ogr_path(path: str | os.PathLike) -> str:
    """A path pyogrio reads as the file it names. pyogrio parses paths as URIs and cuts a file name at ``;``
    (URL parameters) or ``!`` (an archive member), so such a file is read through a symbolic link with a
    plain name in a temporary folder (made once per file and process, removed at exit)."""
    path = os.fspath(path)
    name = os.path.basename(path)
    if ";" not in name and "!" not in name:
        return path
    if path not in _LINKS:
        import atexit
        import shutil
        import tempfile

        folder = tempfile.mkdtemp(prefix="geoseg-link-")
        atexit.register(shutil.rmtree, folder, True)
        link = os.path.join(folder, name.replace(";", "_").replace("!", "_"))
        os.symlink(os.path.abspath(path), link)
        _LINKS[path] = link
    return _LINKS[path]


def output_stem(path: str | os.PathLike) -> str:
    """``scenes/a.tif`` -> ``a`` (and a fetched web map ``out/a.webmap.tif`` -> ``a``)."""
    name = Path(path).name
    if name.lower().endswith(".webmap.tif"):
        return name[: -len(".webmap.tif")]
    for suffix in RASTER_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem
