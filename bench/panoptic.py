"""Benchmark: geoseg's COCO panoptic scorer against panopticapi's ``pq_compute`` on the same files, side by side.

Usage::

    python bench/panoptic.py --repeats 3 [--tile 200]

The data is real: ``geoseg predict buildings-rgb --panoptic`` on the SpaceNet Rio scene of
``../shared/data`` (3464 x 3339 px, 2,335 footprints) is the prediction; the footprints, one instance
each, on background stuff, are the reference. Both are cut into ``--tile``-pixel images (306 at
200 px) and written as COCO panoptic sets (RGB PNGs beside their JSON), so each scorer reads PNGs
and JSON as it would for COCO. Each run is its own process and reports the scoring call's wall time
(the JSON and PNG reading included, the interpreter start not); the two run interleaved,
``--repeats`` times, and medians are printed with their ratio. ``pq_compute`` runs in the pinned
reference environment (``build/cityscapes-ref``: panopticapi-lite on numpy 2.2) with its
multiprocessing pool of one process per core; geoseg scores images on one thread per core. The
numbers of both are compared, and must be equal to 1e-12.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "out" / "panoptic"
RIO = ROOT.parent / "shared" / "data" / "spacenet-utilities" / "AOI_0_TEST_3band_Small_mask.tif"
LABELS = RIO.with_name("AOI_0_TEST_BuildingLabels.geojson")
REF_PYTHON = ROOT / "build" / "cityscapes-ref" / "bin" / "python"
CATEGORIES = [{"id": 0, "name": "background", "isthing": 0}, {"id": 1, "name": "building", "isthing": 1}]


def make_sets(tile: int) -> tuple[Path, Path]:
    import geopandas as gpd
    import numpy as np
    import rasterio
    from rasterio.features import rasterize

    from geoseg.benchmarks.coco_panoptic import write_panoptic

    gt_json, pred_json = OUT / f"gt{tile}.json", OUT / f"pred{tile}.json"
    if gt_json.exists() and pred_json.exists():
        return gt_json, pred_json
    pred_dir = OUT / "predict"
    if not (pred_dir / f"{RIO.stem}.panoptic.tif").exists():
        subprocess.run([sys.executable, "-c", "from geoseg.cli.main import main; main()", "predict", "buildings-rgb",
                        str(RIO), "-o", str(pred_dir), "--panoptic", "--no-progress", "--overwrite"], check=True)
    with rasterio.open(pred_dir / f"{RIO.stem}.panoptic.tif") as src:
        pan, t, crs, shape = src.read(), src.transform, src.crs, (src.height, src.width)
    feats = gpd.read_file(LABELS).to_crs(crs)
    ref_inst = rasterize(((g, i + 1) for i, g in enumerate(feats.geometry)), out_shape=shape, transform=t, fill=0,
                         dtype="int64")
    gt_images, pred_images = [], []
    for r in range(0, shape[0] - tile + 1, tile):
        for c in range(0, shape[1] - tile + 1, tile):
            image = {"id": len(gt_images) + 1, "file_name": f"r{r}_c{c}.jpg", "height": tile, "width": tile}
            for cls, inst, out in (((ref_inst > 0).astype(np.int64), ref_inst, gt_images),
                                   (pan[0].astype(np.int64), pan[1].astype(np.int64), pred_images)):
                cls, inst = cls[r:r + tile, c:c + tile], inst[r:r + tile, c:c + tile]
                key = np.where(cls == 255, -1, cls * (1 << 32) + np.where(cls == 1, inst, 0))
                u, invr = np.unique(key, return_inverse=True)
                ids = np.where(u >= 0, np.arange(1, len(u) + 1), 0)[invr].reshape(cls.shape).astype(np.uint32)
                area = np.bincount(ids.ravel(), minlength=len(u) + 1)
                info = [{"id": k + 1, "category_id": int(v >> 32), "iscrowd": 0, "area": int(area[k + 1])}
                        for k, v in enumerate(u.tolist()) if v >= 0]
                out.append((image, ids, info))
    OUT.mkdir(parents=True, exist_ok=True)
    write_panoptic(OUT / f"gt{tile}", gt_json, gt_images, CATEGORIES)
    write_panoptic(OUT / f"pred{tile}", pred_json, pred_images, CATEGORIES)
    return gt_json, pred_json


def child(kind: str, gt: str, pred: str) -> None:
    t0 = time.perf_counter()
    if kind == "pq_compute":
        import contextlib
        import io

        from panopticapi.evaluation import pq_compute

        with contextlib.redirect_stdout(io.StringIO()):
            res = pq_compute(gt, pred, gt.replace(".json", ""), pred.replace(".json", ""))
        res = {k: ({str(c): v for c, v in r.items()} if k == "per_class" else r) for k, r in res.items()}
    else:
        from geoseg import benchmarks

        block = benchmarks.get("coco-panoptic").score(pred, gt)["panoptic"]
        res = {k: block[k] for k in ("All", "Things", "Stuff")}
        res["per_class"] = {str(c["id"]): {m: c[m] for m in ("pq", "sq", "rq")} for c in block["per_class"]}
    print(json.dumps({"seconds": time.perf_counter() - t0, "result": res}))


def run(kind: str, gt: Path, pred: Path) -> dict:
    python = str(REF_PYTHON) if kind == "pq_compute" else sys.executable
    out = subprocess.run([python, __file__, "--child", kind, str(gt), str(pred)], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def same(a: dict, b: dict) -> bool:
    for k in ("All", "Things", "Stuff"):
        if any(abs(a[k][m] - b[k][m]) > 1e-12 for m in ("pq", "sq", "rq")) or a[k]["n"] != b[k]["n"]:
            return False
    return all(abs(a["per_class"][c][m] - b["per_class"][c][m]) <= 1e-12 for c in b["per_class"]
               for m in ("pq", "sq", "rq"))


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        child(*sys.argv[2:5])
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tile", type=int, default=200)
    args = ap.parse_args()
    gt, pred = make_sets(args.tile)
    n = len(json.loads(gt.read_text())["annotations"])
    times: dict[str, list[float]] = {"pq_compute": [], "geoseg": []}
    results = {}
    for _ in range(args.repeats):
        for kind in times:  # interleaved
            r = run(kind, gt, pred)
            times[kind].append(r["seconds"])
            results[kind] = r["result"]
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{n} images of {args.tile} x {args.tile} px; medians of {args.repeats} (s): "
          + ", ".join(f"{k} {v:.3f}" for k, v in med.items()))
    print(f"speed-up {med['pq_compute'] / med['geoseg']:.2f}x; identical numbers: "
          f"{same(results['geoseg'], results['pq_compute'])}; PQ {results['geoseg']['All']['pq']:.6f} "
          f"(things {results['geoseg']['Things']['pq']:.6f}, stuff {results['geoseg']['Stuff']['pq']:.6f})")
    print("all runs (s): " + json.dumps({k: [round(x, 3) for x in v] for k, v in times.items()}))


if __name__ == "__main__":
    main()
