"""Instance outputs: ``NAME.instances.gpkg`` (styled), ``NAME.instances.tif`` (uint32 ids, COG) and COCO results.

Every file is written under a temporary name and renamed into place (``geoseg.io.output``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from rasterio import Affine

from geoseg.classes import ClassList
from geoseg.inference.pieces import Instance
from geoseg.inference.tiling import chunk_grid
from geoseg.io.raster import SceneInfo

LAYER = "instances"
BATCH = 4096  # instances traced and written at a time
# pixels: the instance's own mask, before overlaps with higher-scoring masks are resolved in NAME.instances.tif
FIELDS = ["instance_id", "class_id", "class_name", "score", "area_m2", "perimeter_m", "pixels", "source"]


def polygons(instances: list[Instance], transform: Affine) -> np.ndarray:
    """Each instance's mask as one (multi)polygon in map coordinates, exactly along pixel edges: its
    4-connected parts traced by ``geoseg.vector.tracing`` (compiled), then the scene's transform applied
    to every vertex at once."""
    import shapely
    from scipy import ndimage

    from geoseg.vector.tracing import polygons as trace

    out = np.empty(len(instances), dtype=object)
    for k, q in enumerate(instances):
        parts, n = ndimage.label(q.mask)
        _, geoms = trace(parts, q.x0, q.y0)
        out[k] = geoms[0] if n == 1 else shapely.union_all(geoms)
    return to_map(out, transform)


def to_map(geoms: np.ndarray, transform: Affine) -> np.ndarray:
    """Geometries in pixel coordinates moved to map coordinates by ``transform``, every vertex at once."""
    import shapely

    if not len(geoms):
        return geoms
    a, b, c, d, e, f = transform.a, transform.b, transform.c, transform.d, transform.e, transform.f
    return shapely.transform(geoms, lambda xy: np.column_stack([a * xy[:, 0] + b * xy[:, 1] + c,
                                                                d * xy[:, 0] + e * xy[:, 1] + f]))


def write_gpkg(final: Path, instances: list[Instance], info: SceneInfo, classes: ClassList,
               regularize: bool = False) -> None:
    """The instances as one styled layer; ``regularize``: building footprints with right-angled edges
    (``geoseg.vector.regularize``; other classes keep their pixel outlines)."""
    import geopandas as gpd
    import pyogrio

    from geoseg.classes import object_classes
    from geoseg.io.output import replacing, respect_umask
    from geoseg.io.styles import categorized_fill_qml, write_layer_styles
    from geoseg.vector.regularize import regularize_footprints
    from geoseg.vector.vectorize import GroundMeasure

    names = {c.id: c.name for c in classes}
    measure = GroundMeasure(info.crs, info.transform)
    sel_ids = [c.id for c in object_classes(classes)] if regularize else []
    # in batches, so that a scene's polygons are never all held at once; regularizing aligns
    # neighbours, so it needs the whole layer in one
    step = max(len(instances), 1) if regularize else BATCH
    with replacing(final, "gpkg") as tmp:
        for at in range(0, max(len(instances), 1), step):
            batch = instances[at : at + step]
            geoms = polygons(batch, info.transform)
            sel = np.isin([q.label for q in batch], sel_ids)
            if sel.any():
                geoms[sel] = regularize_footprints(geoms[sel], info.crs)
            area, perim = measure.area_perimeter(list(geoms)) if len(geoms) else (np.zeros(0), np.zeros(0))
            frame = gpd.GeoDataFrame({
                "instance_id": np.arange(at + 1, at + len(batch) + 1, dtype=np.int64),
                "class_id": np.array([q.label for q in batch], dtype=np.int64),
                "class_name": [names.get(q.label, f"class_{q.label}") for q in batch],
                "score": np.array([q.score for q in batch], dtype=np.float64),
                "area_m2": area, "perimeter_m": perim,
                "pixels": np.array([int(q.mask.sum()) for q in batch], dtype=np.int64),
                "source": ["tile" if q.parts == 1 else f"merged from {q.parts} tiles" for q in batch],
            }, geometry=list(geoms), crs=info.crs)
            pyogrio.write_dataframe(frame, tmp, layer=LAYER, driver="GPKG", geometry_type="MultiPolygon",
                                    promote_to_multi=True, append=at > 0)
            del frame, geoms
        write_layer_styles(tmp, {LAYER: categorized_fill_qml([c for c in classes if c.vectorize])})
        respect_umask(tmp)


def write_raster(final: Path, instances: list[Instance], info: SceneInfo, chunk_size: int) -> None:
    """uint32 instance ids (1.. in the GeoPackage's order, 0 = none), painted chunk by chunk; where two
    masks overlap, the higher score (then the lower id) is on top."""
    from geoseg.io.output import ChunkWriter

    order = sorted(range(len(instances)), key=lambda i: (instances[i].score, -i))
    writer = ChunkWriter(final, info, 1, 0, nearest_overviews=True, dtype="uint32")
    try:
        for row in chunk_grid(info.height, info.width, chunk_size):
            for ch in row:
                w = ch.window
                y0, x0, h, wd = int(w.row_off), int(w.col_off), int(w.height), int(w.width)
                arr = np.zeros((h, wd), dtype=np.uint32)
                for i in order:
                    q = instances[i]
                    ya, yb, xa, xb = max(y0, q.y0), min(y0 + h, q.y1), max(x0, q.x0), min(x0 + wd, q.x1)
                    if ya >= yb or xa >= xb:
                        continue
                    m = q.mask[ya - q.y0 : yb - q.y0, xa - q.x0 : xb - q.x0]
                    arr[ya - y0 : yb - y0, xa - x0 : xb - x0][m] = i + 1
                writer.write(arr, w)

        def decorate(ds) -> None:
            ds.set_band_description(1, "instance id (0 = none)")
            ds.update_tags(geoseg_product="instances")

        writer.finish_cog(decorate, "NEAREST")
    except BaseException:
        writer.discard()
        raise


def scene_rle(inst: Instance, height: int, width: int) -> dict:
    """COCO compressed RLE of the instance in scene pixels, built from its crop (never a scene-sized mask)."""
    from pycocotools import mask as mask_utils

    cx, cy = np.nonzero(inst.mask.T)  # column-major order: by column, then row
    pos = (inst.x0 + cx).astype(np.int64) * height + inst.y0 + cy
    breaks = np.flatnonzero(np.diff(pos) != 1) + 1
    starts = np.r_[pos[0], pos[breaks]]
    ends = np.r_[pos[breaks - 1] + 1, pos[-1] + 1]
    counts = np.empty(2 * len(starts) + 1, dtype=np.int64)
    counts[0::2] = np.r_[starts[0], starts[1:] - ends[:-1], height * width - ends[-1]]
    counts[1::2] = ends - starts
    rle = mask_utils.frPyObjects({"size": [height, width], "counts": counts.tolist()}, height, width)
    return {"size": [height, width], "counts": rle["counts"].decode()}


def coco_results(instances: list[Instance], info: SceneInfo, image_id: int) -> list[dict]:
    return [{"image_id": image_id, "category_id": q.label, "score": q.score,
             "bbox": [float(q.x0), float(q.y0), float(q.mask.shape[1]), float(q.mask.shape[0])],
             "segmentation": scene_rle(q, info.height, info.width)} for q in instances]


def write_json(final: Path, data) -> None:
    from geoseg.io.output import atomic_write_text

    atomic_write_text(final, json.dumps(data))
