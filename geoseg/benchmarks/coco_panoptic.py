"""COCO panoptic: a JSON of per-image segment lists beside a folder of RGB segment PNGs, scored by PQ.

The format (Kirillov et al.; COCO 2018): each PNG pixel's segment id is ``R + 256 G + 256² B``, 0 is
VOID; each annotation lists an image's segments (``id``, ``category_id``, ``iscrowd``, ``area``). Results
take the same form, the JSON and its PNG folder of the same stem side by side, as ``pq_compute`` of
panopticapi takes them, and the numbers equal that scorer's (``geoseg.evaluation.panoptic`` follows its
rules; the tests run it on the same files).

Why not call ``pq_compute`` itself: panopticapi is not published with a numpy 2 install (panopticapi-lite
pins numpy < 2), it prints to stdout, and it decodes every PNG with Pillow and counts pairs with
``np.unique`` over the pixels; here the PNGs are read by ``geoseg.benchmarks.images`` and the pairs are
counted in one compiled pass, on threads (``bench/panoptic.py``: the speed-up, numbers identical).
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from geoseg.benchmarks.registry import register
from geoseg.errors import GeosegError
from geoseg.evaluation.panoptic import (
    VOID,
    PairCounts,
    PanopticStats,
    Segment,
    SegmentError,
    match_segments,
    panoptic_block,
)


def load_json(path, what: str) -> dict:
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        raise GeosegError(f"{what} not found", path) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise GeosegError(f"not valid JSON ({exc})", path) from None
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise GeosegError(f"not a COCO panoptic {what}: the 'annotations' list is missing", path)
    for n, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or "image_id" not in ann or "file_name" not in ann \
                or not isinstance(ann.get("segments_info"), list):
            raise GeosegError(f"annotations[{n}] needs image_id, file_name and a segments_info list", path)
    return data


def segment_folder(json_path, folder=None) -> Path:
    """The PNG folder of a panoptic JSON: ``folder``, else the folder of the JSON's stem beside it."""
    p = Path(json_path)
    out = Path(folder) if folder is not None else p.with_suffix("")
    if not out.is_dir():
        raise GeosegError(f"the segment PNG folder {out} does not exist (it sits beside the JSON, named as its stem)",
                          json_path)
    return out


def categories_of(gt: dict, path) -> dict[int, dict]:
    cats = gt.get("categories")
    if not isinstance(cats, list) or not cats:
        raise GeosegError("not a COCO panoptic annotation file: the 'categories' list is missing", path)
    return {int(c["id"]): c for c in cats}


def rgb_to_id(rgb: np.ndarray) -> np.ndarray:
    """Segment ids ``R + 256 G + 256² B`` of an (h, w, 3) uint8 array, as uint32 (a compiled pass)."""
    from geoseg.benchmarks._png_ext import rgb_ids

    return rgb_ids(np.ascontiguousarray(rgb, dtype=np.uint8))


def id_to_rgb(ids: np.ndarray) -> np.ndarray:
    ids = np.ascontiguousarray(ids, dtype="<u4")
    return ids.view(np.uint8).reshape(*ids.shape, 4)[..., :3].copy()


def read_segment_png(path: Path, role: str) -> np.ndarray:
    """An RGB segment PNG's ids; one clear line for a missing or unreadable file."""
    from geoseg.benchmarks.images import png_rgb

    try:
        rgb = png_rgb(path)
        if rgb is None:
            from PIL import Image, UnidentifiedImageError

            try:
                with Image.open(path) as img:
                    if img.mode != "RGB":
                        raise GeosegError(f"the {role} segment image is mode {img.mode}; COCO panoptic segment "
                                          "images are RGB (id = R + 256 G + 256² B)", path)
                    rgb = np.asarray(img)
            except (UnidentifiedImageError, ValueError) as exc:
                raise GeosegError(f"cannot read the {role} segment image ({exc})", path) from None
    except FileNotFoundError:
        raise GeosegError(f"{role} segment image not found", path) from None
    except OSError as exc:
        raise GeosegError(f"cannot read the {role} segment image ({exc})", path) from None
    return rgb_to_id(rgb)


def segments_of(ann: dict, path, role: str, categories: dict | None, reference: bool) -> dict[int, Segment]:
    out: dict[int, Segment] = {}
    for s in ann["segments_info"]:
        try:
            sid, cat = int(s["id"]), int(s["category_id"])
        except (KeyError, TypeError, ValueError):
            raise GeosegError(f"image {ann['image_id']}: a segment without an integer id and category_id "
                              f"({s!r:.80})", path) from None
        if sid in out:
            raise GeosegError(f"image {ann['image_id']}: segment {sid} is listed twice (segments may not overlap)",
                              path)
        if sid == VOID:
            raise GeosegError(f"image {ann['image_id']}: segment id 0 is VOID, not a segment", path)
        if categories is not None and cat not in categories:
            raise GeosegError(f"image {ann['image_id']}: segment {sid} has unknown category_id {cat}", path)
        area = int(s["area"]) if reference and "area" in s else None
        out[sid] = Segment(cat, bool(s.get("iscrowd", 0)) if reference else False, area)
    return out


class PanopticSet:
    """A COCO panoptic JSON and its PNG folder: the annotations, and each image's segment ids and segments."""

    def __init__(self, json_path, folder=None, role: str = "ground truth", data: dict | None = None) -> None:
        self.path, self.role = json_path, role
        self.data = data if data is not None else load_json(json_path, "annotation file" if role == "ground truth"
                                                            else "results file")
        self.folder = segment_folder(json_path, folder)
        self.annotations = self.data["annotations"]

    def categories(self) -> dict[int, dict]:
        return categories_of(self.data, self.path)

    def read(self, ann: dict, categories: dict | None = None) -> tuple[np.ndarray, dict[int, Segment], Path]:
        file = self.folder / ann["file_name"]
        return (read_segment_png(file, self.role),
                segments_of(ann, self.path, self.role, categories, self.role == "ground truth"), file)


def score_image(gt_ann: dict, pred_ann: dict, gt: PanopticSet, pred: PanopticSet, categories: dict) -> PanopticStats:
    ref_ids, ref, gt_file = gt.read(gt_ann)
    pred_ids, prd, pred_file = pred.read(pred_ann, categories)
    if ref_ids.shape != pred_ids.shape:
        raise GeosegError(f"is {pred_ids.shape[1]}x{pred_ids.shape[0]} px but its ground truth {gt_file} is "
                          f"{ref_ids.shape[1]}x{ref_ids.shape[0]} px", pred_file)
    try:
        return match_segments(PairCounts.of(ref_ids, pred_ids), ref, prd)
    except SegmentError as exc:
        raise GeosegError(f"image {pred_ann['image_id']}: {exc} ({pred.path})", pred_file) from None


def score(predictions, gt, prediction_folder=None, allow_missing: bool = False, workers: int | None = None
          ) -> tuple[PanopticStats, dict, list]:
    """PQ statistics of a panoptic results JSON (its PNG folder beside it, or ``prediction_folder``)
    against ``gt``: a :class:`PanopticSet` (the Cityscapes adapter gives one that converts its ground truth)."""
    pred = PanopticSet(predictions, prediction_folder, "prediction")
    categories = gt.categories()
    by_image = {}
    for ann in pred.annotations:
        if ann["image_id"] in by_image:
            raise GeosegError(f"image {ann['image_id']} has two annotations", predictions)
        by_image[ann["image_id"]] = ann
    pairs, missing = [], []
    for g in gt.annotations:
        if g["image_id"] in by_image:
            pairs.append((g, by_image[g["image_id"]]))
        else:
            missing.append(str(g["image_id"]))
    if missing and not allow_missing:
        raise GeosegError(f"no prediction for {len(missing)} image(s): {', '.join(missing[:5])}"
                          f"{' and more' if len(missing) > 5 else ''} (pass --allow-missing to skip them)", predictions)
    if not pairs:
        raise GeosegError("no image of the annotations has a prediction", predictions)
    stats = PanopticStats()
    with ThreadPoolExecutor(workers or min(8, os.cpu_count() or 1)) as pool:  # the kernels release the GIL
        for s in pool.map(lambda gp: score_image(gp[0], gp[1], gt, pred, categories), pairs):
            stats += s
    return stats, categories, [g for g, _ in pairs]


class COCOPanopticAdapter:
    name = "coco-panoptic"
    kind = "panoptic"
    summary = "COCO panoptic: PQ, SQ, RQ for All, Things and Stuff and per category (the COCO panoptic scorer's rules)"
    layout = ("an annotation JSON (--annotations) and a results JSON, each beside its folder of RGB segment PNGs "
              "named as its stem")
    conventions = ("pq_compute's: IoU > 0.5 matches; VOID (id 0) left out of unions, predictions mostly on VOID "
                   "and their category's crowd region not counted; reference areas from the JSON")

    def evaluate(self, predictions, output, annotations, allow_missing: bool = False, overwrite: bool = False) -> dict:
        report = self.score(predictions, annotations, allow_missing)
        _publish(report, output, overwrite)
        return report

    def prediction_targets(self, root, split=None, annotations=None) -> tuple[list, list]:
        """(image_id, name, image path) of every image of ``annotations`` under ``root``, and the categories."""
        if annotations is None:
            raise GeosegError("benchmark predict coco-panoptic needs --annotations (its images are predicted)")
        if split is not None:
            raise GeosegError("--split does not apply to coco-panoptic (the annotations list the images)")
        gt = load_json(annotations, "annotation file")
        categories_of(gt, annotations)
        images = []
        for im in gt.get("images", []):
            path = Path(root) / str(im["file_name"])
            if not path.is_file():
                raise GeosegError(f"image {im['id']} is not under --root", path)
            images.append((im["id"], Path(str(im["file_name"])).stem, path))
        return images, gt["categories"]

    def score(self, predictions, annotations, allow_missing: bool = False) -> dict:
        stats, categories, images = score(predictions, PanopticSet(annotations), allow_missing=allow_missing)
        return report_of(self.name, stats, categories, images, annotations=str(annotations))


def report_of(adapter: str, stats: PanopticStats, categories: dict, images: list, **benchmark) -> dict:
    from geoseg.version import __version__

    return {"schema_version": 1, "geoseg_version": __version__,
            "benchmark": {"adapter": adapter, **benchmark},
            "inputs": [{"scene": str(a["file_name"]), "image_id": a["image_id"]} for a in images],
            "panoptic": panoptic_block(stats, categories)}


def _publish(report: dict, output, overwrite: bool) -> None:
    from geoseg.benchmarks.instance_report import panoptic_html, panoptic_markdown
    from geoseg.benchmarks.semantic import publish

    publish(report, None, None, output, overwrite, markdown=panoptic_markdown, html=panoptic_html)


def write_panoptic(folder: Path, json_path: Path, images: list[tuple[dict, np.ndarray, list[dict]]],
                   categories: list[dict]) -> None:
    """A COCO panoptic set: each ``(image, segment ids, segments_info)`` as ``folder/NAME.png`` and its
    annotation in ``json_path``; every file under a temporary name, then renamed."""
    from PIL import Image

    from geoseg.io.output import atomic_write_text, replacing

    folder.mkdir(parents=True, exist_ok=True)
    anns = []
    for image, ids, info in images:
        name = f"{Path(str(image['file_name'])).stem}.png"
        with replacing(folder / name, "png") as tmp:
            Image.fromarray(id_to_rgb(ids), "RGB").save(tmp, format="PNG")
        anns.append({"image_id": image["id"], "file_name": name, "segments_info": info})
    atomic_write_text(json_path, json.dumps({"images": [i for i, _, _ in images], "annotations": anns,
                                             "categories": categories}))


def raster_to_segments(cls: np.ndarray, inst: np.ndarray, things: np.ndarray, reference: bool
                       ) -> tuple[np.ndarray, list[dict]]:
    """One chip of a (class, instance) raster as COCO panoptic segment ids 1.. and segments_info: a segment per
    thing instance and per stuff class, VOID (class 255) 0; a reference's thing pixels without an instance are
    crowd. Each segment records geoseg's ``instance_id`` (0 for stuff), so an import restores the raster."""
    from geoseg.classes import NODATA
    from geoseg.evaluation.panoptic import raster_segment_ids, split_segment_id

    c = cls.astype(np.int64)
    keys = raster_segment_ids(c, inst.astype(np.uint64), (c == NODATA) | (c < 0) | (c > 254), things)
    u, inv = np.unique(keys, return_inverse=True)
    inv = inv.reshape(keys.shape)
    seg = np.arange(len(u), dtype=np.uint32) + (0 if len(u) and u[0] == VOID else 1)
    ids = seg[inv]
    area = np.bincount(inv.ravel(), minlength=len(u))
    info = []
    for k, key in enumerate(u.tolist()):
        if key == VOID:
            continue
        cid, iid = split_segment_id(key)
        ys, xs = np.nonzero(inv == k)
        info.append({"id": int(seg[k]), "category_id": int(cid), "iscrowd": int(reference and bool(things[cid])
                                                                                 and iid == 0),
                     "area": int(area[k]), "bbox": [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1),
                                                    int(ys.max() - ys.min() + 1)], "instance_id": int(iid)})
    return ids, info


def export_panoptic(rasters, output, chip_size: int = 512, overlap: int = 0, classes: str | None = None,
                    reference: bool = False, overwrite: bool = False) -> Path:
    """Two-band (class id, instance id) rasters (``NAME.panoptic.tif``, or panoptic references) cut into COCO
    panoptic chips: ``OUTPUT/panoptic.json`` beside ``OUTPUT/panoptic/``; each image entry carries the chip's
    CRS and transform, so :func:`import_panoptic` puts chips (and results on them) back on the map."""
    import rasterio
    from rasterio.windows import Window

    from geoseg.benchmarks.export import _scenes, chip_windows
    from geoseg.classes import ClassList, load_classes
    from geoseg.io.output import output_dir

    out = Path(output)
    target = out / "panoptic.json"
    if target.exists() and not overwrite:
        raise GeosegError("already holds an export; pass --overwrite to replace it", out)
    files = []
    for item in rasters if isinstance(rasters, (list, tuple)) else [rasters]:
        if os.path.isdir(item):  # a predict output folder: its panoptic rasters
            found = sorted(str(p) for p in Path(item).glob("*.panoptic.tif"))
            if not found:
                raise GeosegError("folder holds no NAME.panoptic.tif (geoseg predict --panoptic writes them)", item)
            files += found
        else:
            files += _scenes([os.fspath(item)])
    images, cats = [], {}
    for scene in files:
        with rasterio.open(scene) as src:
            if src.count < 2:
                raise GeosegError(f"has {src.count} band; a panoptic raster has two (class id, instance id)", scene)
            tags = src.tags()
        if classes:
            cl = load_classes(classes)
        elif "GEOSEG_CLASSES" in tags:
            cl = ClassList.from_dict({"classes": json.loads(tags["GEOSEG_CLASSES"])}, scene)
        else:
            raise GeosegError("has no geoseg class metadata; pass --classes", scene)
        for c in cl:
            cats.setdefault(c.id, {"id": c.id, "name": c.name, "isthing": int(c.isthing), "color": list(c.rgb)})
    things = np.zeros(256, bool)
    for c in cats.values():
        things[c["id"]] = bool(c["isthing"])
    with output_dir(out):
        for scene in files:
            with rasterio.open(scene) as src:
                stem = Path(scene).name.removesuffix(".tif").removesuffix(".panoptic")
                for r, c, h, w in chip_windows(src.height, src.width, chip_size, overlap):
                    win = Window(c, r, w, h)
                    arr = src.read([1, 2], window=win)
                    ids, info = raster_to_segments(arr[0], arr[1], things, reference)
                    image = {"id": len(images) + 1, "file_name": f"{stem}_{r}_{c}.png", "height": h, "width": w,
                             "scene": os.path.basename(scene), "row": r, "col": c,
                             "crs": src.crs.to_wkt() if src.crs else None,
                             "transform": list(src.window_transform(win).to_gdal())}
                    images.append((image, ids, info))
        write_panoptic(out / "panoptic", target, images, sorted(cats.values(), key=lambda c: c["id"]))
    return out


def import_panoptic(results, output, annotations=None, overwrite: bool = False) -> list[Path]:
    """COCO panoptic chips (an export, or results on its chips: ``annotations`` gives the georeferencing) back
    to two-band GeoTIFFs ``OUTPUT/NAME.panoptic.tif``: class = category_id, instance = the segment's
    ``instance_id`` where recorded, else its segment id for things (0 for stuff); VOID 255."""
    import rasterio
    from rasterio import Affine

    from geoseg.classes import NODATA
    from geoseg.io.output import output_dir, replacing

    res = PanopticSet(results, role="prediction")
    geo = load_json(annotations, "annotation file") if annotations else res.data
    images = {im["id"]: im for im in geo.get("images", [])}
    cats = {c["id"]: c for c in geo.get("categories", res.data.get("categories", []))}
    missing = [a["image_id"] for a in res.annotations if "transform" not in images.get(a["image_id"], {})]
    if missing:
        raise GeosegError(f"images {missing[:5]} carry no crs/transform: import needs chips exported by geoseg "
                          "(pass their --annotations)", annotations or results)
    tags = json.dumps([{"id": c["id"], "name": c.get("name", str(c["id"])),
                        "color": "#{:02x}{:02x}{:02x}".format(*c.get("color", (128, 128, 128))), "vectorize": True,
                        **({"isthing": True} if c.get("isthing") else {})} for c in cats.values()])
    out = Path(output)
    written = []
    with output_dir(out):
        for ann in res.annotations:
            im = images[ann["image_id"]]
            ids, segs, file = res.read(ann)
            cls = np.full(ids.shape, NODATA, np.uint32)
            inst = np.zeros(ids.shape, np.uint32)
            for s in ann["segments_info"]:
                m = ids == int(s["id"])
                cls[m] = int(s["category_id"])
                thing = bool(cats.get(int(s["category_id"]), {}).get("isthing", 0))
                inst[m] = int(s.get("instance_id", s["id"] if thing else 0))
            final = out / f"{Path(str(ann['file_name'])).stem}.panoptic.tif"
            if final.exists() and not overwrite:
                raise GeosegError("exists; pass --overwrite to replace it", final)
            with replacing(final, "tif") as tmp, rasterio.open(
                    tmp, "w", driver="GTiff", width=ids.shape[1], height=ids.shape[0], count=2, dtype="uint32",
                    crs=im.get("crs"), transform=Affine.from_gdal(*im["transform"]), compress="DEFLATE") as d:
                d.write(np.stack([cls, inst]))
                d.update_tags(GEOSEG_CLASSES=tags)
            written.append(final)
    return written


ADAPTER = register(COCOPanopticAdapter())
