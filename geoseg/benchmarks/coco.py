"""COCO instance segmentation and boxes, scored by pycocotools' COCOeval (never a home-made matcher).

``faster-coco-eval`` is used when installed (``pip install geoseg[benchmarks]``): its 12 statistics
equal pycocotools' to 1e-12 on the tests' files and it is faster. ``engine="pycocotools"`` forces the
reference implementation.

Conventions, all pycocotools' unless an option says otherwise:
- annotation ids of 0 (labelme's exports start there) mean "unmatched" to pycocotools, which then
  counts a detection matched to that annotation as a false positive; they are renumbered from 1
  with a warning;
- polygon and uncompressed-RLE detections are encoded to compressed RLE on the image's size first
  (what COCOeval does to ground truth);
- when a result carries a ``bbox``, pycocotools' ``loadRes`` takes its area from the box even for
  ``segm``, which decides small / medium / large; ``segm_area="mask"`` drops the boxes for the
  ``segm`` pass so mask areas decide (detectron2's choice).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging

import numpy as np

from geoseg.benchmarks.registry import register
from geoseg.benchmarks.semantic import publish
from geoseg.errors import GeosegError

log = logging.getLogger("geoseg")
STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def _load_json(path, what: str):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise GeosegError(f"{what} not found", path) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise GeosegError(f"not valid JSON ({exc})", path) from None


def load_annotations(path) -> dict:
    """A COCO annotation file, checked, with annotation ids renumbered from 1 when any is 0 or repeated."""
    data = _load_json(path, "annotation file")
    if not isinstance(data, dict):
        raise GeosegError("a COCO annotation file is a mapping with images, annotations and categories", path)
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise GeosegError(f"not a COCO annotation file: the '{key}' list is missing", path)
    ids = [a.get("id") for a in data["annotations"]]
    if 0 in ids or len(set(ids)) != len(ids):
        log.warning("%s: annotation ids %s; pycocotools reads id 0 as 'unmatched', so they are renumbered from 1",
                    path, "start at 0" if 0 in ids else "repeat")
        data = {**data, "annotations": [{**a, "id": n} for n, a in enumerate(data["annotations"], 1)]}
    return data


def load_results(path, gt: dict) -> list[dict]:
    """A COCO results list, checked against the annotations, segmentations as compressed RLE."""
    from pycocotools import mask as mask_utils

    res = path if isinstance(path, list) else _load_json(path, "results file")
    where = None if isinstance(path, list) else path
    if not isinstance(res, list):
        raise GeosegError("a COCO results file is a list of detections", where)
    if not res:
        raise GeosegError("the results file holds no detections", where)
    images = {im["id"]: im for im in gt["images"]}
    cats = {c["id"] for c in gt["categories"]}
    bad_img = sorted({r.get("image_id") for r in res if r.get("image_id") not in images}, key=str)
    if bad_img:
        raise GeosegError(f"image ids not in the annotations: {', '.join(map(str, bad_img[:8]))}", where)
    bad_cat = sorted({r.get("category_id") for r in res if r.get("category_id") not in cats}, key=str)
    if bad_cat:
        raise GeosegError(f"category ids not in the annotations: {', '.join(map(str, bad_cat[:8]))}", where)
    out = []
    for n, r in enumerate(res):
        if "score" not in r or ("segmentation" not in r and "bbox" not in r):
            raise GeosegError(f"detection {n} needs a score and a segmentation or bbox", where)
        r = dict(r)
        seg = r.get("segmentation")
        if seg is not None:
            im = images[r["image_id"]]
            h, w = im.get("height"), im.get("width")
            if isinstance(seg, list) or isinstance(seg.get("counts"), list):
                if not h or not w:
                    raise GeosegError(f"image {r['image_id']} has no height/width for polygon detections", where)
                rles = mask_utils.frPyObjects(seg if isinstance(seg, list) else seg, h, w)
                rle = mask_utils.merge(rles) if isinstance(rles, list) else rles
            else:
                rle = dict(seg)
            if isinstance(rle["counts"], bytes):
                rle["counts"] = rle["counts"].decode()
            r["segmentation"] = rle
        out.append(r)
    if any("bbox" in r for r in out):  # pycocotools reads every box once the first has one: fill the rest
        for r in out:
            if "bbox" not in r:
                r["bbox"] = [float(v) for v in mask_utils.toBbox(r["segmentation"])]
    return out


def _engine(name: str):
    """(COCO, COCOeval) classes of the chosen implementation."""
    if name in ("auto", "faster-coco-eval"):
        try:
            from faster_coco_eval import COCO, COCOeval_faster

            return "faster-coco-eval", COCO, COCOeval_faster
        except ImportError:
            if name != "auto":
                raise GeosegError("engine faster-coco-eval is not installed (pip install faster-coco-eval)") from None
    if name not in ("auto", "pycocotools"):
        raise GeosegError(f"unknown COCO engine {name!r} (valid: auto, faster-coco-eval, pycocotools)")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    return "pycocotools", COCO, COCOeval


def _load_res(COCO, coco_gt, results: list[dict]):
    """``COCO.loadRes`` for checked results, with every mask's area and box computed in one call.

    The same two branches as pycocotools' ``loadRes`` (the first result decides): with boxes, the
    area is the box's and a box outline stands in for a missing mask; without, the area is the mask's
    and the box is the mask's. Ids from 1, ``iscrowd`` 0. (loadRes computes these one detection at a
    time, which was a fifth of a COCO-sized evaluation; the tests compare the statistics with
    pycocotools' own loadRes.)
    """
    from pycocotools import mask as mask_utils

    anns = [dict(r) for r in results]
    if anns[0].get("bbox"):
        for i, a in enumerate(anns, 1):
            x, y, w, h = a["bbox"]
            if "segmentation" not in a:
                a["segmentation"] = [[x, y, x, y + h, x + w, y + h, x + w, y]]
            a["area"], a["id"], a["iscrowd"] = w * h, i, 0
    else:
        rles = [a["segmentation"] for a in anns]
        # in calls of at most 255 masks: pycocotools 2.0.11's area() overflows a uint8 count beyond that
        areas = np.concatenate([mask_utils.area(rles[i:i + 255]) for i in range(0, len(rles), 255)])
        boxes = np.concatenate([mask_utils.toBbox(rles[i:i + 255]) for i in range(0, len(rles), 255)])
        for i, (a, area, box) in enumerate(zip(anns, areas, boxes), 1):
            a["area"], a["id"], a["iscrowd"] = area, i, 0
            a.setdefault("bbox", box)
    res = COCO()
    res.dataset = {"images": list(coco_gt.dataset["images"]), "categories": list(coco_gt.dataset["categories"]),
                   "annotations": anns}
    res.createIndex()
    return res


def coco_eval(gt: dict, results: list[dict], iou_type: str, engine: str = "auto"):
    """Run COCOeval; returns (the 12 stats, per-category AP by category id, engine name)."""
    name, COCO, COCOeval = _engine(engine)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        # COCOeval rewrites ground-truth segmentations and loadRes adds keys to each detection: copy the
        # dicts (one level is enough; nested values are replaced, not changed in place)
        coco_gt.dataset = {**gt, "annotations": [dict(a) for a in gt["annotations"]]}
        coco_gt.createIndex()
        coco_dt = _load_res(COCO, coco_gt, results)
        ev = COCOeval(coco_gt, coco_dt, iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = [float(s) for s in ev.stats[:12]]
    precision = np.asarray(ev.eval["precision"])  # [T, R, K, A, M]
    per_class = {}
    for k, cat_id in enumerate(ev.params.catIds):
        p = precision[:, :, k, 0, -1]
        p = p[p > -1]
        per_class[int(cat_id)] = float(p.mean()) if p.size else float("nan")
    return stats, per_class, name


def _null(v: float):
    return None if v is None or v != v or v == -1 else float(v)


class COCOAdapter:
    name = "coco"
    kind = "instances"
    summary = "COCO instance segmentation and boxes: the 12 COCOeval statistics for segm and bbox, AP per class"
    layout = "an annotation JSON (--annotations) and a results JSON (image_id, category_id, segmentation/bbox, score)"
    conventions = ("pycocotools' matching, crowd, area ranges and maxDets; box area decides object size when a "
                   "result has a bbox (--segm-area mask: mask area); annotation id 0 renumbered")

    def evaluate(self, predictions, output, annotations, segm_area: str = "box", engine: str = "auto",
                 iou_types: str = "segm,bbox", overwrite: bool = False) -> dict:
        report = self.score(predictions, annotations, segm_area, engine, iou_types)
        from geoseg.benchmarks.instance_report import html, markdown

        publish(report, None, None, output, overwrite, markdown=markdown, html=html)
        return report

    def score(self, predictions, annotations, segm_area: str = "box", engine: str = "auto",
              iou_types: str = "segm,bbox") -> dict:
        from geoseg.version import __version__

        if segm_area not in ("box", "mask"):
            raise GeosegError(f"--segm-area must be box or mask, got {segm_area!r}")
        wanted = [t.strip() for t in str(iou_types).split(",") if t.strip()]
        if not wanted or set(wanted) - {"segm", "bbox"}:
            raise GeosegError(f"--iou-types must be segm, bbox or both (segm,bbox), got {iou_types!r}")
        gt = load_annotations(annotations)
        results = load_results(predictions, gt)
        instances: dict = {}
        per: dict[int, dict] = {}
        used = None
        kinds = [k for k, field in (("segm", "segmentation"), ("bbox", "bbox")) if any(field in r for r in results)]
        if "segm" in kinds and "bbox" not in kinds:
            kinds.append("bbox")  # loadRes derives each detection's box from its mask
        for kind in ("segm", "bbox"):
            if kind not in kinds or kind not in wanted:
                instances[kind] = None
                continue
            res = results
            if kind == "segm":
                res = [r for r in results if "segmentation" in r]
                if segm_area == "mask":
                    res = [{k: v for k, v in r.items() if k != "bbox"} for r in res]
            stats, ap, used = coco_eval(gt, res, kind, engine)
            instances[kind] = dict(zip(STATS, [_null(s) for s in stats]))
            for cat_id, v in ap.items():
                per.setdefault(cat_id, {})[f"{kind}_AP"] = _null(v)
        names = {c["id"]: c.get("name", str(c["id"])) for c in gt["categories"]}
        instances["per_class"] = [{"id": c, "name": names[c], "segm_AP": per[c].get("segm_AP"),
                                   "bbox_AP": per[c].get("bbox_AP")} for c in sorted(per)]
        return {"schema_version": 1, "geoseg_version": __version__,
                "benchmark": {"adapter": self.name, "annotations": str(annotations), "segm_area": segm_area,
                              "engine": used},
                "inputs": [{"scene": im.get("file_name", str(im["id"])), "image_id": im["id"]} for im in gt["images"]],
                "instances": instances}


ADAPTER = register(COCOAdapter())
