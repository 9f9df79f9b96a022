"""Benchmark: ``geoseg benchmark evaluate`` against the official scorers.

Usage::

    python bench/benchmarks.py                 # 200 Cityscapes-sized pairs, 500 COCO-sized images, x3 interleaved
    python bench/benchmarks.py --quick         # 10 pairs, 25 images, x1

Rows:

- **cityscapes**: ``benchmark evaluate cityscapes`` (IoU, iIoU, categories, report files) against
  cityscapesScripts 2.3.0 ``evalPixelLevelSemanticLabeling.evaluateImgLists`` on the same 2048x1024
  labelIds / instanceIds / prediction PNGs, run in its pinned environment (``make reference-env``).
- **coco**: ``benchmark evaluate coco --iou-types segm`` (load, check, COCOeval, report files)
  against pycocotools ``COCO`` + ``loadRes`` + ``COCOeval('segm')`` on the same JSON files.

Each run is a subprocess reporting its seconds (imports excluded) and peak RSS; the two sides
alternate; medians are quoted, with the scores of both sides compared.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "out" / "benchmarks"
REF_PYTHON = ROOT / "build" / "cityscapes-ref" / "bin" / "python"


# -- data ----------------------------------------------------------------------------------------------


def _ellipse(h: int, w: int, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    yy, xx = np.ogrid[:h, :w]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1


def make_cityscapes(n: int) -> Path:
    """n street-scene-like 2048x1024 frames: sky, buildings, road, sidewalk, vegetation, poles, signs,
    10-25 car and person instances; predictions are the ground truth shifted, with wrong-class blobs and
    void predictions."""
    from PIL import Image

    root = OUT / f"cityscapes-{n}"
    done = root / ".done"
    if done.exists():
        return root
    h, w = 1024, 2048
    gt_dir, pred_dir = root / "gtFine" / "val" / "benchcity", root / "preds"
    gt_dir.mkdir(parents=True, exist_ok=True)
    pred_dir.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        rng = np.random.default_rng(i)
        lab = np.zeros((h, w), np.uint8)
        horizon = int(rng.uniform(0.3, 0.45) * h)
        lab[:horizon] = 23  # sky
        xs = np.cumsum(rng.integers(80, 300, 20))
        for x0, x1 in zip(np.r_[0, xs[:-1]], xs):
            top = int(rng.uniform(0.05, 0.35) * h)
            lab[top:int(0.6 * h), x0:x1] = rng.choice([11, 11, 12, 13, 21])
        lab[int(0.6 * h):] = 7  # road
        lab[int(0.6 * h):int(0.68 * h), : w // 3] = 8  # sidewalk
        lab[int(0.6 * h):int(0.66 * h), 2 * w // 3:] = 22
        for _ in range(30):
            x = int(rng.integers(0, w - 10))
            lab[int(0.3 * h):int(0.62 * h), x:x + 8] = 17  # poles
        for _ in range(8):
            y, x = int(rng.integers(200, 500)), int(rng.integers(0, w - 40))
            lab[y:y + 30, x:x + 30] = rng.choice([19, 20])
        lab[-60:] = 1  # ego vehicle (ignored)
        inst = lab.astype(np.uint16).copy()
        for k in range(int(rng.integers(10, 26))):
            cls = 26 if k % 3 else 24
            cy, cx = rng.uniform(0.55, 0.85) * h, rng.uniform(0, w)
            ry, rx = (rng.uniform(30, 90), rng.uniform(60, 180)) if cls == 26 else (rng.uniform(30, 80),
                                                                                     rng.uniform(10, 25))
            m = _ellipse(h, w, cy, cx, ry, rx) & (lab != 1)
            lab[m] = cls
            inst[m] = cls * 1000 + k
        pred = np.roll(lab, (int(rng.integers(-6, 7)), int(rng.integers(-6, 7))), (0, 1))
        for _ in range(12):
            m = _ellipse(h, w, rng.uniform(0, h), rng.uniform(0, w), rng.uniform(10, 80), rng.uniform(10, 120))
            pred[m] = rng.choice([7, 8, 11, 21, 23, 26, 24, 0])
        frame = f"benchcity_{i:06d}_000019"
        Image.fromarray(lab).save(gt_dir / f"{frame}_gtFine_labelIds.png")
        Image.fromarray(inst.astype(np.uint16)).save(gt_dir / f"{frame}_gtFine_instanceIds.png")
        Image.fromarray(pred).save(pred_dir / f"{frame}_leftImg8bit.png")
    done.touch()
    return root


def make_coco(n: int, gts: int = 20, dets: int = 100) -> Path:
    """n 640x480 images with ``gts`` polygon objects each; ``dets`` RLE detections each (perturbed
    ground truth and false positives)."""
    from pycocotools import mask as mu

    folder = OUT / f"coco-{n}"
    done = folder / ".done"
    if done.exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    h, w = 480, 640
    images, anns, results = [], [], []
    cats = [{"id": c, "name": f"class{c}"} for c in range(1, 11)]
    for i in range(1, n + 1):
        rng = np.random.default_rng(1000 + i)
        images.append({"id": i, "file_name": f"{i}.jpg", "height": h, "width": w})
        objs = []
        for _ in range(gts):
            cy, cx, ry, rx = rng.uniform(20, h - 20), rng.uniform(20, w - 20), rng.uniform(5, 80), rng.uniform(5, 80)
            t = np.linspace(0, 2 * np.pi, 24, endpoint=False)
            poly = np.stack([np.clip(cx + rx * np.cos(t), 0, w), np.clip(cy + ry * np.sin(t), 0, h)], 1).ravel()
            cat = int(rng.integers(1, 11))
            rle = mu.merge(mu.frPyObjects([poly.tolist()], h, w))
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": cat, "segmentation": [poly.tolist()],
                         "area": float(mu.area(rle)), "bbox": [float(v) for v in mu.toBbox(rle)], "iscrowd": 0})
            objs.append((cy, cx, ry, rx, cat))
        for k in range(dets):
            if k < len(objs) * 2:
                cy, cx, ry, rx, cat = objs[k % len(objs)]
                cy, cx = cy + rng.normal(0, 4), cx + rng.normal(0, 4)
                ry, rx = ry * rng.uniform(0.8, 1.2), rx * rng.uniform(0.8, 1.2)
                if rng.random() < 0.1:
                    cat = int(rng.integers(1, 11))
            else:
                cy, cx, ry, rx, cat = (rng.uniform(0, h), rng.uniform(0, w), rng.uniform(5, 60), rng.uniform(5, 60),
                                       int(rng.integers(1, 11)))
            m = _ellipse(h, w, cy, cx, max(ry, 2), max(rx, 2)).astype(np.uint8)
            rle = mu.encode(np.asfortranarray(m))
            results.append({"image_id": i, "category_id": cat, "segmentation": {"size": [h, w],
                            "counts": rle["counts"].decode()}, "score": float(rng.uniform(0.05, 1))})
    (folder / "annotations.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    (folder / "results.json").write_text(json.dumps(results))
    done.touch()
    return folder


# -- the runs -------------------------------------------------------------------------------------------

OFFICIAL_CS = """
import glob, json, os, resource, sys, time
from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as ev
root, scratch = sys.argv[1], sys.argv[2]
os.chdir(scratch)
gts = sorted(glob.glob(os.path.join(root, "gtFine", "val", "*", "*_gtFine_labelIds.png")))
ev.args.quiet = True
ev.args.JSONOutput = False
ev.args.predictionPath = os.path.join(root, "preds")
t0 = time.perf_counter()
preds = [ev.getPrediction(ev.args, g) for g in gts]
res = ev.evaluateImgLists(preds, gts, ev.args)
dt = time.perf_counter() - t0
print(json.dumps({"seconds": dt, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "scores": [res["averageScoreClasses"], res["averageScoreInstClasses"],
                             res["averageScoreCategories"], res["averageScoreInstCategories"]]}))
"""


def child(kind: str, data: str) -> None:
    from geoseg import benchmarks

    if kind.startswith("geoseg"):  # what evaluate imports lazily: imports stay outside the clock on both sides
        import geoseg.evaluation.figures  # noqa: F401
        import geoseg.evaluation.report  # noqa: F401
        import geoseg.io.output  # noqa: F401
    t0 = time.perf_counter()
    if kind == "geoseg-cityscapes":
        r = benchmarks.evaluate("cityscapes", Path(data) / "preds", OUT / "report-cs", root=data, overwrite=True)
        o = r["overall"]
        scores = [o["mean_iou"], o["mean_iiou"], o["category_iou"], o["category_iiou"]]
    elif kind == "geoseg-coco":
        r = benchmarks.evaluate("coco", Path(data) / "results.json", OUT / "report-coco",
                                annotations=Path(data) / "annotations.json", iou_types="segm", overwrite=True)
        scores = list(r["instances"]["segm"].values())
    else:  # pycocotools
        import contextlib
        import io

        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        with contextlib.redirect_stdout(io.StringIO()):
            g = COCO(str(Path(data) / "annotations.json"))
            d = g.loadRes(str(Path(data) / "results.json"))
            ev = COCOeval(g, d, "segm")
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        scores = [None if s == -1 else float(s) for s in ev.stats]
    dt = time.perf_counter() - t0
    print(json.dumps({"seconds": dt, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "scores": scores}))


def measure(kind: str, data: Path, items: int) -> dict:
    if kind == "cityscapesScripts":
        scratch = OUT / "scratch"
        scratch.mkdir(exist_ok=True)
        cmd = [str(REF_PYTHON), "-c", OFFICIAL_CS, str(data), str(scratch)]
    else:
        cmd = [sys.executable, __file__, "--child", kind, str(data)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"{kind} failed:\n{r.stderr[-3000:]}")
    res = json.loads(r.stdout.strip().splitlines()[-1])
    res["rate"] = items / res["seconds"]
    print(f"  {kind:18s} {res['seconds']:8.2f} s {res['rate']:8.2f} items/s {res['rss_mb']:7.0f} MB", flush=True)
    return res


def compare(title: str, ours: str, theirs: str, data: Path, items: int, repeats: int, unit: str) -> None:
    rows = {ours: [], theirs: []}
    print(f"{title}, interleaved x{repeats}")
    for _ in range(repeats):
        for k in (theirs, ours):
            rows[k].append(measure(k, data, items))
    a, b = rows[ours][0]["scores"], rows[theirs][0]["scores"]
    diff = max(abs(x - y) for x, y in zip(a, b) if x is not None and y is not None)
    same_nan = all((x is None) == (y is None) for x, y in zip(a, b))
    med = {k: statistics.median(r["rate"] for r in v) for k, v in rows.items()}
    print(f"\n| run | median {unit}/s | median s | median peak RSS (MB) |\n|---|---|---|---|")
    for k in (theirs, ours):
        print(f"| {k} | {med[k]:.2f} | {statistics.median(r['seconds'] for r in rows[k]):.2f} | "
              f"{statistics.median(r['rss_mb'] for r in rows[k]):.0f} |")
    print(f"| **ratio** | **{med[ours] / med[theirs]:.2f}x** | | |")
    print(f"scores: largest difference {diff:.2e}; undefined values agree: {same_nan}\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", nargs=2, metavar=("KIND", "DATA"))
    ap.add_argument("--pairs", type=int, default=200)
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", choices=["cityscapes", "coco"])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.child:
        return child(*args.child)
    OUT.mkdir(parents=True, exist_ok=True)
    if args.quick:
        args.pairs, args.images, args.repeats = 10, 25, 1
    if args.only != "coco":
        if not REF_PYTHON.exists():
            raise SystemExit(f"{REF_PYTHON} is missing: run `make reference-env` first")
        data = make_cityscapes(args.pairs)
        compare(f"Cityscapes: {args.pairs} pairs of 2048x1024", "geoseg-cityscapes", "cityscapesScripts", data,
                args.pairs, args.repeats, "image")
    if args.only != "cityscapes":
        data = make_coco(args.images)
        compare(f"COCO segm: {args.images} images, 20 objects and 100 detections each", "geoseg-coco",
                "pycocotools", data, args.images, args.repeats, "image")


if __name__ == "__main__":
    main()
