"""Benchmark: ``geoseg evaluate`` against torchmetrics and a whole-array ``np.bincount``.

Usage::

    python bench/evaluate.py            # 16384² 6-class prediction/reference pair, 3 interleaved repeats
    python bench/evaluate.py --quick

Rows: geoseg evaluate end to end (GeoTIFFs to report.json/md/html; the audit
GeoPackage is a separate row), torchmetrics ``MulticlassJaccardIndex`` updated
chunk by chunk from the same files, and ``np.bincount`` over both whole arrays
read into memory. Each run is a subprocess reporting seconds and peak RSS.
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
OUT = HERE / "out"
sys.path.insert(0, str(HERE))
K = 6


def make_pair(size: int) -> tuple[Path, Path]:
    import rasterio
    from scenes import smooth_field, write_class_raster

    pred = write_class_raster(OUT / f"eval_pred_{size}.tif", size, classes=K, cells=40, seed=1)
    ref = OUT / f"eval_ref_{size}.tif"
    if not ref.exists():
        rng = np.random.default_rng(2)
        with rasterio.open(pred) as src:
            profile = src.profile
            with rasterio.open(ref.with_suffix(".partial.tif"), "w", **profile) as dst:
                for _, win in src.block_windows(1):
                    a = src.read(1, window=win)
                    # spatially coherent errors, as a model makes them: blobs where the class is off by one
                    wrong = smooth_field(a.shape[0], a.shape[1], rng, cells=24) > 0.75
                    a[wrong] = (a[wrong] + 1) % K
                    dst.write(a, 1, window=win)
        ref.with_suffix(".partial.tif").rename(ref)
    return pred, ref


def run_geoseg(pred: str, ref: str, audit: bool) -> list:

    from geoseg.classes import ClassList
    from geoseg.evaluation.evaluate import EvaluateOptions, evaluate

    classes = OUT / "eval_classes.yaml"
    if not classes.exists():
        import yaml

        yaml.safe_dump(ClassList.from_names([f"c{i}" for i in range(K)], background=False).to_dict(),
                       open(classes, "w"))
    rep = evaluate(pred, ref, OUT / ("eval-geoseg-audit" if audit else "eval-geoseg"),
                   EvaluateOptions(classes=str(classes), overwrite=True, progress=False, audit=audit))
    return [c["iou"] for c in rep["classes"]]


def run_torchmetrics(pred: str, ref: str) -> list:
    import rasterio
    import torch
    from torchmetrics.classification import MulticlassJaccardIndex

    m = MulticlassJaccardIndex(K, average="none", ignore_index=255)
    with rasterio.open(pred) as p, rasterio.open(ref) as r:
        for y in range(0, p.height, 2048):
            win = rasterio.windows.Window(0, y, p.width, min(2048, p.height - y))
            m.update(torch.from_numpy(p.read(1, window=win).astype(np.int64)),
                     torch.from_numpy(r.read(1, window=win).astype(np.int64)))
    return m.compute().tolist()


def run_bincount(pred: str, ref: str) -> list:
    import rasterio

    with rasterio.open(pred) as p, rasterio.open(ref) as r:
        a, b = p.read(1), r.read(1)
    cm = np.bincount(b.astype(np.uint16).ravel() * K + a.ravel(), minlength=K * K).reshape(K, K)
    tp = np.diag(cm)
    return (tp / (cm.sum(0) + cm.sum(1) - tp)).tolist()


def child(kind: str, pred: str, ref: str) -> None:
    # each side imports only what it uses (torch alone is ~300 MB of RSS), and imports are not timed
    if kind == "torchmetrics":
        import torchmetrics  # noqa: F401
    elif kind.startswith("geoseg"):
        import geoseg.evaluation.evaluate  # noqa: F401
    else:
        import rasterio  # noqa: F401

    fns = {"geoseg": lambda: run_geoseg(pred, ref, False), "geoseg+audit": lambda: run_geoseg(pred, ref, True),
           "torchmetrics": lambda: run_torchmetrics(pred, ref), "bincount": lambda: run_bincount(pred, ref)}
    t0 = time.perf_counter()
    iou = fns[kind]()
    dt = time.perf_counter() - t0
    print(json.dumps({"seconds": dt, "iou": iou, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def measure(kind: str, pred: Path, ref: Path, mp: float) -> dict:
    r = subprocess.run([sys.executable, __file__, "--child", kind, str(pred), str(ref)], capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"{kind} failed:\n{r.stderr[-3000:]}")
    res = json.loads(r.stdout.strip().splitlines()[-1])
    res["mps"] = mp / res["seconds"]
    print(f"  {kind:13s} {res['seconds']:7.2f} s {res['mps']:7.1f} MP/s {res['rss_mb']:7.0f} MB", flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", nargs=3, metavar=("KIND", "PRED", "REF"))
    ap.add_argument("--size", type=int, default=16384)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.child:
        return child(*args.child)
    OUT.mkdir(exist_ok=True)
    if args.quick:
        args.size, args.repeats = 2048, 1
    pred, ref = make_pair(args.size)
    mp = args.size**2 / 1e6
    kinds = ["bincount", "torchmetrics", "geoseg"]
    print(f"{args.size}² {K}-class pair, interleaved x{args.repeats}")
    rows = {k: [] for k in kinds}
    for _ in range(args.repeats):
        for k in kinds:
            rows[k].append(measure(k, pred, ref, mp))
    audit = measure("geoseg+audit", pred, ref, mp)
    ious = {k: np.asarray(v[0]["iou"], dtype=float) for k, v in rows.items()}
    agree = max(float(np.abs(ious["geoseg"] - ious[k]).max()) for k in ("bincount", "torchmetrics"))
    med = {k: statistics.median(r["mps"] for r in v) for k, v in rows.items()}
    print("\n| run | median MP/s | geoseg ratio | median peak RSS (MB) |\n|---|---|---|---|")
    for k in kinds:
        ratio = "" if k == "geoseg" else f"{med['geoseg'] / med[k]:.2f}×"
        print(f"| {k} | {med[k]:.1f} | {ratio} | {statistics.median(r['rss_mb'] for r in rows[k]):.0f} |")
    print(f"| geoseg with audit.gpkg (1 run) | {audit['mps']:.1f} | | {audit['rss_mb']:.0f} |")
    print(f"\nper-class IoU, largest difference between the three: {agree:.2e}")


if __name__ == "__main__":
    main()
