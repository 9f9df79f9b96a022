"""Georeferenced scenes and vector labels to benchmark formats, and COCO results back to map coordinates.

``export_coco`` cuts scenes into chips and writes one COCO instance JSON: one annotation per
footprint piece per chip (polygons in chip pixel coordinates, clipped at the chip edge; pieces
that cover no pixel centre are left out, since no mask can hold them). Each image entry carries
the chip's ``crs`` (WKT) and ``transform`` (GDAL order), so ``import_coco`` can bring results on
the chips back to map coordinates as a styled GeoPackage. ``export_voc`` writes the same chips with
VOC palette masks and a split file.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from geoseg.errors import GeosegError

log = logging.getLogger("geoseg")


@dataclass(frozen=True)
class Chip:
    scene: str
    name: str
    row: int
    col: int
    height: int
    width: int


def chip_windows(height: int, width: int, size: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """(row, col, h, w) of chips covering the scene; the last row and column are shifted inside it."""
    if size <= 0 or not 0 <= overlap < size:
        raise GeosegError(f"--chip-size must be positive and --overlap in 0..chip size - 1 (got {size}, {overlap})")

    def starts(n: int) -> list[int]:
        if n <= size:
            return [0]
        s = list(range(0, n - size, size - overlap))
        return [*s, n - size]

    return [(r, c, min(size, height), min(size, width)) for r in starts(height) for c in starts(width)]


def _read_labels(path, crs, class_field: str | None, category: str):
    import pyogrio

    try:
        gdf = pyogrio.read_dataframe(path)
    except Exception as exc:  # pyogrio raises several types for unreadable files
        raise GeosegError(f"not a readable vector file ({exc})", path) from None
    if gdf.crs is None:
        raise GeosegError("the labels have no CRS", path)
    if class_field and class_field not in gdf.columns:
        raise GeosegError(f"no field {class_field!r} (fields: {', '.join(map(str, gdf.columns[:12]))})", path)
    gdf = gdf[gdf.geometry.notna() & ~gdf.geometry.is_empty].to_crs(crs)
    gdf = gdf[gdf.geom_type.isin(["Polygon", "MultiPolygon"])]
    names = gdf[class_field].astype(str).to_numpy() if class_field else np.full(len(gdf), category, dtype=object)
    return gdf.geometry.make_valid().to_numpy(), names


def _chip_image(src, window, fmt: str) -> tuple[np.ndarray, str]:
    arr = src.read(window=window)
    if fmt == "png" and (arr.dtype not in (np.uint8, np.uint16) or arr.shape[0] not in (1, 3, 4)
                         or arr.dtype == np.uint16 and arr.shape[0] != 1):
        raise GeosegError(f"{arr.shape[0]} band(s) of {arr.dtype} do not fit a PNG chip; pass --format tif",
                          src.name)
    return arr, fmt


def _write_chip(path: Path, arr: np.ndarray, src, window, fmt: str) -> None:
    from geoseg.io.output import tmp_name

    tmp = tmp_name(path, fmt)
    try:
        if fmt == "png":
            from PIL import Image

            img = Image.fromarray(arr[0] if arr.shape[0] == 1 else np.moveaxis(arr, 0, -1))
            img.save(tmp, format="PNG")
        else:
            import rasterio

            profile = {**src.profile, "driver": "GTiff", "height": arr.shape[1], "width": arr.shape[2],
                       "transform": src.window_transform(window), "tiled": False, "compress": "deflate"}
            profile.pop("blockxsize", None)
            profile.pop("blockysize", None)
            with rasterio.open(tmp, "w", **profile) as dst:
                dst.write(arr)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _pieces(geoms, names, tree, box, inv_affine):
    """Footprint pieces inside ``box`` in chip pixel coordinates: (category name, Polygon)."""
    import shapely
    from shapely import affinity

    out = []
    for i in tree.query(box, predicate="intersects"):
        clipped = shapely.intersection(geoms[i], box)
        for part in getattr(clipped, "geoms", [clipped]):
            if part.geom_type == "Polygon" and not part.is_empty and part.area > 0:
                out.append((names[i], affinity.affine_transform(part, inv_affine)))
    return out


def _coco_segmentation(poly, h: int, w: int):
    """A COCO polygon list (exact), or compressed RLE for a polygon with holes (COCO polygons cannot hold them)."""
    from pycocotools import mask as mask_utils

    if not poly.interiors:
        return [[float(v) for xy in poly.exterior.coords[:-1] for v in xy]]
    from rasterio import features

    m = features.rasterize([(poly, 1)], out_shape=(h, w), fill=0, dtype="uint8")
    rle = mask_utils.encode(np.asfortranarray(m))
    rle["counts"] = rle["counts"].decode()
    return rle


def _scenes(inputs) -> list[str]:
    from geoseg.io.inputs import resolve_inputs

    return resolve_inputs(inputs if isinstance(inputs, list) else [os.fspath(inputs)])


def export(kind: str, scenes, labels, output, chip_size: int = 512, overlap: int = 0, class_field: str | None = None,
           category: str = "building", fmt: str = "png", split: str = "train", overwrite: bool = False) -> Path:
    """Write COCO (``kind="coco"``) or VOC (``"voc"``) chips of ``scenes`` labelled by ``labels``."""
    import rasterio
    import shapely
    from pycocotools import mask as mask_utils
    from rasterio.windows import Window

    from geoseg.io.output import output_dir

    if kind not in ("coco", "voc"):
        raise GeosegError(f"unknown export format {kind!r} (valid: coco, voc)")
    if fmt not in ("png", "tif"):
        raise GeosegError(f"--format must be png or tif, got {fmt!r}")
    files = _scenes(scenes)
    out = Path(output)
    target = out / ("annotations.json" if kind == "coco" else "SegmentationClass")
    if target.exists() and not overwrite:
        raise GeosegError("already holds an export; pass --overwrite to replace it", out)
    images, annotations, categories, split_names = [], [], {}, []
    skipped = 0
    with output_dir(out):
        img_dir = out / ("images" if kind == "coco" else "JPEGImages")
        img_dir.mkdir(exist_ok=True)
        if kind == "voc":
            (out / "SegmentationClass").mkdir(exist_ok=True)
        for scene in files:
            with rasterio.open(scene) as src:
                if src.crs is None:
                    raise GeosegError("has no CRS; export needs georeferenced scenes", scene)
                geoms, names = _read_labels(labels, src.crs, class_field, category)
                for n in sorted(set(names.tolist())):
                    categories.setdefault(n, len(categories) + 1)
                tree = shapely.STRtree(geoms)
                stem = Path(scene).stem
                for r, c, h, w in chip_windows(src.height, src.width, chip_size, overlap):
                    window = Window(c, r, w, h)
                    t = src.window_transform(window)
                    box = shapely.box(*rasterio.windows.bounds(window, src.transform))
                    inv = ~t
                    pieces = _pieces(geoms, names, tree, box, [inv.a, inv.b, inv.d, inv.e, inv.xoff, inv.yoff])
                    arr, ext = _chip_image(src, window, fmt)
                    name = f"{stem}_{r}_{c}"
                    if kind == "voc" and ext == "png" and arr.dtype == np.uint8 and arr.shape[0] == 3:
                        file = img_dir / f"{name}.jpg"  # VOC's own image format
                        _write_jpeg(file, arr)
                    else:
                        file = img_dir / f"{name}.{ext}"
                        _write_chip(file, arr, src, window, ext)
                    image_id = len(images) + 1
                    images.append({"id": image_id, "file_name": f"{img_dir.name}/{file.name}", "height": h, "width": w,
                                   "scene": os.path.basename(scene), "row": r, "col": c,
                                   "crs": src.crs.to_wkt(), "transform": list(t.to_gdal())})
                    split_names.append(name)
                    if kind == "coco":
                        for cat, poly in pieces:
                            seg = _coco_segmentation(poly, h, w)
                            rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w)) if isinstance(seg, list) \
                                else seg
                            if mask_utils.area(rle) == 0:
                                skipped += 1
                                continue
                            x0, y0, x1, y1 = poly.bounds
                            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                                "category_id": categories[cat], "segmentation": seg,
                                                "area": float(poly.area), "bbox": [x0, y0, x1 - x0, y1 - y0],
                                                "iscrowd": 0})
                    else:
                        _write_voc_mask(out / "SegmentationClass" / f"{name}.png", pieces, categories, h, w)
        cats = [{"id": i, "name": n, "supercategory": n} for n, i in categories.items()]
        if kind == "coco":
            from geoseg.io.output import atomic_write_text

            atomic_write_text(out / "annotations.json", json.dumps(
                {"info": {"description": "geoseg export", "scenes": [os.path.basename(s) for s in files]},
                 "images": images, "annotations": annotations, "categories": cats}))
            if skipped:
                log.warning("%s: %d footprint pieces cover no pixel centre of their chip and were left out", out,
                            skipped)
        else:
            from geoseg.io.output import atomic_write_text

            (out / "ImageSets" / "Segmentation").mkdir(parents=True, exist_ok=True)
            atomic_write_text(out / "ImageSets" / "Segmentation" / f"{split}.txt", "\n".join(split_names) + "\n")
            atomic_write_text(out / "class_names.txt", "\n".join(["background", *categories]) + "\n")
    return out


def _write_jpeg(path: Path, arr: np.ndarray) -> None:
    from PIL import Image

    from geoseg.io.output import tmp_name

    tmp = tmp_name(path, "jpg")
    try:
        Image.fromarray(np.moveaxis(arr, 0, -1)).save(tmp, format="JPEG", quality=95)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_voc_mask(path: Path, pieces, categories: dict, h: int, w: int) -> None:
    from rasterio import features

    from geoseg.benchmarks.images import write_png
    from geoseg.benchmarks.voc import colormap

    mask = np.zeros((h, w), dtype=np.uint8)
    shapes = [(poly, categories[cat]) for cat, poly in pieces]
    if shapes:
        mask = features.rasterize(shapes, out_shape=(h, w), fill=0, dtype="uint8")
    write_png(path, mask, colormap())


def import_coco(results, annotations, output, score_threshold: float = 0.0, overwrite: bool = False) -> Path:
    """COCO results on exported chips -> a GeoPackage in map coordinates, one layer per category, styled."""
    import geopandas as gpd
    import shapely
    from pycocotools import mask as mask_utils
    from rasterio import Affine, features
    from shapely import affinity

    from geoseg.benchmarks.coco import load_annotations, load_results
    from geoseg.classes import ClassList
    from geoseg.io.output import output_dir, replacing
    from geoseg.io.styles import fill_qml, write_layer_styles

    gt = load_annotations(annotations)
    images = {im["id"]: im for im in gt["images"]}
    no_geo = [i for i, im in images.items() if "crs" not in im or "transform" not in im]
    if no_geo:
        raise GeosegError(f"images {no_geo[:5]} carry no crs/transform: import needs an export made by geoseg",
                          annotations)
    from geoseg.benchmarks.coco import _load_json

    raw = _load_json(results, "results file")
    res = load_results(raw, gt)  # checked ids, masks as RLE; polygons are taken from ``raw`` as they are
    final = Path(output)
    if final.exists() and not overwrite:
        raise GeosegError("exists; pass --overwrite to replace it", final)
    cats = {c["id"]: c["name"] for c in gt["categories"]}
    rows = {c: [] for c in cats}
    crs = None
    for r, given in zip(res, raw):
        if r["score"] < score_threshold:
            continue
        im = images[r["image_id"]]
        t = Affine.from_gdal(*im["transform"])
        crs = crs or im["crs"]
        poly = given.get("segmentation")
        if isinstance(poly, list) and poly:  # polygons stay exact
            geom = shapely.union_all([shapely.Polygon(np.reshape(p, (-1, 2))) for p in poly if len(p) >= 6])
            geom = affinity.affine_transform(geom, [t.a, t.b, t.d, t.e, t.xoff, t.yoff])
        else:
            m = mask_utils.decode(r["segmentation"]).astype(np.uint8)
            geom = shapely.union_all([shapely.geometry.shape(g) for g, v in features.shapes(m, mask=m > 0, transform=t)
                                      if v])
        if geom.is_empty:
            continue
        rows[r["category_id"]].append({"score": float(r["score"]), "class": cats[r["category_id"]],
                                       "image_id": r["image_id"], "chip": im["file_name"], "geometry": geom})
    classes = ClassList.from_names(list(cats.values()), background=False)
    with output_dir(final.parent), replacing(final, "gpkg") as tmp:
        styles = {}
        for (cid, _name), cls in zip(cats.items(), classes):
            frame = gpd.GeoDataFrame(rows[cid], columns=["score", "class", "image_id", "chip", "geometry"],
                                     geometry="geometry", crs=crs)
            frame.to_file(tmp, layer=cls.slug, driver="GPKG", engine="pyogrio")
            styles[cls.slug] = fill_qml(cls, alpha=160)
        write_layer_styles(tmp, styles)
    log.info("%s: %d instances", final, sum(len(v) for v in rows.values()))
    return final
