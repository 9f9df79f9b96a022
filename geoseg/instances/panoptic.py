"""Panoptic outputs: a class raster (stuff) and an instance raster (things) joined into one map.

``NAME.panoptic.tif`` is a two-band uint32 COG: band 1 the class id (255: no prediction), band 2 the
instance id (the ``instance_id`` of ``NAME.instances.gpkg``; 0 for stuff). ``NAME.panoptic.gpkg``
holds one layer per stuff class (its regions, traced exactly as ``geoseg vectorize`` traces them) and
a ``things`` layer with one (multi)polygon per thing.

The merge (the rule of Panoptic FPN and detectron2's ``combine_semantic_and_instance_outputs``, on
instance rasters whose overlaps are already resolved by score):

1. an instance takes part when its score is at least ``score_threshold`` and it keeps at least
   ``overlap_threshold`` of its own mask in ``NAME.instances.tif`` (where a higher-scoring mask took
   the rest); its pixels there are the thing;
2. every other pixel takes the class raster's class if that class is stuff;
3. what is left (a thing class in the class raster with no instance kept on it, nodata) is VOID:
   class 255, instance 0.

Each step is per pixel, given the instance table, so the output is identical for every chunk size.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio

from geoseg.classes import NODATA, ClassList, SegClass
from geoseg.errors import GeosegError
from geoseg.inference.tiling import chunk_grid
from geoseg.io.raster import SceneInfo

THINGS_LAYER = "things"


@dataclass(frozen=True)
class PanopticRule:
    score_threshold: float = 0.5  # instances scoring below are not things of the panoptic map
    overlap_threshold: float = 0.5  # an instance keeping less of its mask than this (after overlaps) is dropped

    def __post_init__(self) -> None:
        for name, flag in (("score_threshold", "--thing-score"), ("overlap_threshold", "--thing-overlap")):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
                raise GeosegError(f"{flag} must be in [0, 1], got {v!r}")


def panoptic_classes(semantic: ClassList, instance_classes: ClassList, thing_ids: tuple[int, ...]
                     ) -> tuple[ClassList, dict[int, int]]:
    """The panoptic class list and the map from instance class ids to its ids.

    The semantic classes come first; an instance class of the same name (slug) is that class, made a
    thing; any other is added after them. Semantic classes marked ``isthing`` stay things."""
    by_slug = {c.slug: c for c in semantic}
    things = {c.id for c in semantic if c.isthing}
    extra: list[SegClass] = []
    mapping = {}
    next_id = max(c.id for c in semantic) + 1
    for c in instance_classes:
        if c.id not in thing_ids:
            continue
        if c.slug in by_slug:
            mapping[c.id] = by_slug[c.slug].id
        else:
            if next_id >= NODATA:
                raise GeosegError(f"the panoptic class list would pass 254 classes with {c.name!r}")
            extra.append(SegClass(next_id, c.name, c.color, True, True))
            mapping[c.id] = next_id
            next_id += 1
        things.add(mapping[c.id])
    classes = tuple(SegClass(c.id, c.name, c.color, c.vectorize, c.id in things) for c in semantic) + tuple(extra)
    return ClassList(classes, semantic.ignore), mapping


def _instance_table(gpkg: Path) -> dict[str, np.ndarray]:
    import pyogrio

    from geoseg.io.inputs import ogr_path

    gpkg = ogr_path(gpkg)
    cols = [f for f in ("instance_id", "class_id", "score", "pixels") if f in
            pyogrio.read_info(gpkg, layer="instances")["fields"]]
    df = pyogrio.read_dataframe(gpkg, layer="instances", columns=cols, read_geometry=False)
    return {c: df[c].to_numpy() for c in cols}


def compose(classes_tif: Path, instances_tif: Path, instances_gpkg: Path, info: SceneInfo,
            semantic: ClassList, panoptic: ClassList, class_map: dict[int, int], rule: PanopticRule,
            out_tif: Path, out_gpkg: Path, chunk_size: int) -> None:
    """Write ``out_tif`` and ``out_gpkg`` from a scene's class raster and instance outputs."""
    from geoseg.io.output import ChunkWriter, atomic_write_text, tmp_name
    from geoseg.io.styles import paletted_raster_qml

    table = _instance_table(instances_gpkg)
    n = int(table["instance_id"].max()) if len(table["instance_id"]) else 0
    chunks = [c for row in chunk_grid(info.height, info.width, chunk_size) for c in row]
    visible = np.zeros(n + 1, np.int64)
    with rasterio.open(instances_tif) as src:
        for c in chunks:  # pass 1: what each instance keeps of its mask
            visible += np.bincount(src.read(1, window=c.window).ravel(), minlength=n + 1)[: n + 1]
    inst_class = np.full(n + 1, NODATA, np.int64)
    keep = np.zeros(n + 1, bool)
    ids = table["instance_id"].astype(np.int64)
    mapped = np.array([class_map.get(int(c), -1) for c in table["class_id"]], dtype=np.int64)
    ok = (mapped >= 0) & (table["score"] >= rule.score_threshold)
    if "pixels" in table:
        own = table["pixels"].astype(np.int64)
        ok &= visible[ids] >= rule.overlap_threshold * np.maximum(own, 1)
    keep[ids[ok]] = True
    inst_class[ids] = np.where(mapped >= 0, mapped, NODATA)
    stuff_of = np.full(256, NODATA, np.int64)  # semantic class id -> panoptic stuff class id (or VOID)
    for c in semantic:
        p = panoptic.by_id(c.id)
        if p is not None and not p.isthing:
            stuff_of[c.id] = c.id
    writer = ChunkWriter(out_tif, info, 2, None, nearest_overviews=True, dtype="uint32")
    stuff_tmp = tmp_name(out_gpkg, "stuff.tif")
    stuff_profile = dict(driver="GTiff", width=info.width, height=info.height, count=1, dtype="uint8",
                         nodata=NODATA, crs=info.crs, transform=info.transform, tiled=True, compress="ZSTD")
    pieces: dict[int, list] = {}
    try:
        with rasterio.open(classes_tif) as csrc, rasterio.open(instances_tif) as isrc, \
                rasterio.open(stuff_tmp, "w", **stuff_profile) as stuff:
            for c in chunks:  # pass 2: the merge, per pixel
                sem = csrc.read(1, window=c.window).astype(np.int64)
                inst = isrc.read(1, window=c.window).astype(np.int64)
                thing = keep[inst]
                cls = np.where(thing, inst_class[inst], stuff_of[sem])
                band2 = np.where(thing, inst, 0)
                writer.write(np.stack([cls, band2]).astype(np.uint32), c.window)
                stuff.write(np.where(thing, NODATA, cls).astype(np.uint8)[None], window=c.window)
                _trace_things(band2, c.window, pieces)

        def decorate(ds) -> None:
            ds.set_band_description(1, "class id (255: no prediction)")
            ds.set_band_description(2, "instance id (0: stuff)")
            ds.update_tags(GEOSEG_CLASSES=json.dumps(panoptic.to_dict()["classes"]), GEOSEG_NODATA=str(NODATA),
                           geoseg_product="panoptic")

        writer.finish_cog(decorate, "NEAREST")
        atomic_write_text(out_tif.with_suffix(".qml"), paletted_raster_qml(panoptic, transparent_background=False))
        _write_gpkg(out_gpkg, stuff_tmp, pieces, table, inst_class, panoptic, info)
    except BaseException:
        writer.discard()
        out_tif.unlink(missing_ok=True)
        raise
    finally:
        stuff_tmp.unlink(missing_ok=True)


def _trace_things(band2: np.ndarray, window, pieces: dict[int, list]) -> None:
    """Polygons (pixel coordinates) of every thing's 4-connected parts in one chunk."""
    from geoseg.vector import tracing

    if not band2.any():
        return
    u, inv = np.unique(band2, return_inverse=True)
    codes = inv.reshape(band2.shape).astype(np.int64)
    skip = np.zeros(len(u), bool)
    skip[u == 0] = True
    labels, label_code, _ = tracing.label_values(codes, skip, False)
    lab, geoms = tracing.polygons(labels, int(window.col_off), int(window.row_off))
    for label, g in zip(lab.tolist(), geoms):
        pieces.setdefault(int(u[label_code[label]]), []).append(g)


def _write_gpkg(final: Path, stuff_tif: Path, pieces: dict[int, list], table: dict, inst_class: np.ndarray,
                classes: ClassList, info: SceneInfo) -> None:
    import geopandas as gpd
    import pyogrio
    import shapely

    from geoseg.instances.io import to_map
    from geoseg.io.output import replacing, respect_umask
    from geoseg.io.styles import categorized_fill_qml, write_layer_styles
    from geoseg.vector.vectorize import GroundMeasure, VectorizeOptions, vectorize

    stuff = ClassList(tuple(c for c in classes if not c.isthing) or (SegClass(0, "stuff", "#000000", True),),
                      classes.ignore)
    with replacing(final, "gpkg") as tmp:
        vectorize(stuff_tif, tmp, VectorizeOptions(all_classes=True, progress=False, allow_no_crs=True,
                                                   source=final.name.replace(".panoptic.gpkg", ".panoptic.tif"),
                                                   overwrite=True), classes=stuff)
        ids = sorted(pieces)
        geoms = np.empty(len(ids), dtype=object)
        for k, i in enumerate(ids):
            parts = pieces[i]
            geoms[k] = parts[0] if len(parts) == 1 else shapely.union_all(parts)  # exact: integer pixel edges
        geoms = to_map(geoms, info.transform)
        measure = GroundMeasure(info.crs, info.transform)
        area, perim = measure.area_perimeter(list(geoms)) if len(geoms) else (np.zeros(0), np.zeros(0))
        score = dict(zip(table["instance_id"].astype(np.int64).tolist(), table["score"].tolist()))
        names = {c.id: c.name for c in classes}
        cls = [int(inst_class[i]) for i in ids]
        frame = gpd.GeoDataFrame({
            "instance_id": np.asarray(ids, dtype=np.int64), "class_id": np.asarray(cls, dtype=np.int64),
            "class_name": [names.get(x, f"class_{x}") for x in cls],
            "score": np.asarray([score.get(i, np.nan) for i in ids], dtype=np.float64),
            "area_m2": area, "perimeter_m": perim}, geometry=list(geoms), crs=info.crs)
        pyogrio.write_dataframe(frame, tmp, layer=THINGS_LAYER, driver="GPKG", geometry_type="MultiPolygon",
                                promote_to_multi=True, append=True)
        write_layer_styles(tmp, {THINGS_LAYER: categorized_fill_qml([c for c in classes if c.isthing])})
        respect_umask(tmp)


def thing_classes(meta) -> tuple[int, ...]:
    """The class ids a bundle gives instances of: its object channels' classes, or an instance model's
    vectorized (non-background) classes."""
    if meta.objects is not None:
        return tuple(meta.objects.classes)
    return tuple(c.id for c in meta.classes if c.vectorize)


__all__ = ["PanopticRule", "compose", "panoptic_classes", "thing_classes"]
