"""What decoding objects and ``--split-touching`` add to predict, and peak RSS with decoding on large scenes.

    python bench/objects.py [--bundle buildings-rgb] [--size 4096] [--repeats 3] [--rss-sizes 4096,16384]
                            [--precision auto|fp32|bf16|int8]

Scenes are mosaics of the real SpaceNet Rio scene (``../shared/data/spacenet-utilities``), mirrored
across their edges so that every window holds real, dense buildings (about 1,200 objects per 4096²),
in a UTM CRS at the scene's GSD, written window by window.

Side by side, interleaved, ``--repeats`` times, each a ``geoseg`` subprocess (process start
included on every side) timed by its wall clock, with its peak RSS:

- ``predict``: the bundle with its object channels (class raster plus NAME.instances.gpkg/.tif);
- ``predict, no objects``: the same weights with the object channels cut from the head (the same
  network cost to within one 3x3 convolution's three output channels), writing the class raster only;
- ``vectorize`` of that class raster, plain and with ``--split-touching``.

Decoding's share is (predict - predict without objects) / predict without objects; the split's is
(vectorize --split-touching - vectorize) / predict without objects. Then one ``predict`` with
decoding per ``--rss-sizes`` entry, for peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out" / "objects"
RIO = ROOT.parent / "shared" / "data" / "spacenet-utilities" / "AOI_0_TEST_3band_Small_mask.tif"
sys.path.insert(0, str(Path(__file__).resolve().parent))

from regularize import cpu_model, run  # noqa: E402


def mosaic(size: int) -> Path:
    """A ``size``² mosaic of the Rio scene, mirrored at its edges, in UTM 23S at about 0.48 m."""
    import rasterio
    from rasterio.transform import from_origin

    path = OUT / f"rio_mosaic_{size}.tif"
    if path.exists():
        return path
    with rasterio.open(RIO) as src:
        rio = src.read()
    _, h, w = rio.shape
    rows = np.arange(size) % (2 * h)
    rows = np.where(rows < h, rows, 2 * h - 1 - rows)
    profile = dict(driver="GTiff", width=size, height=size, count=3, dtype="uint8", crs="EPSG:32723",
                   transform=from_origin(680000.0, 7460000.0, 0.478, 0.478), tiled=True, blockxsize=512,
                   blockysize=512, compress="DEFLATE", interleave="pixel", photometric="RGB")
    OUT.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial.tif")
    with rasterio.open(tmp, "w", **profile) as dst:
        for r0 in range(0, size, 1024):
            cols = np.arange(size) % (2 * w)
            cols = np.where(cols < w, cols, 2 * w - 1 - cols)
            block = rio[:, rows[r0 : r0 + 1024]][:, :, cols]
            dst.write(block, window=rasterio.windows.Window(0, r0, size, block.shape[1]))
    tmp.rename(path)
    return path


def without_objects(bundle: Path) -> Path:
    """A copy of ``bundle`` whose head keeps only the class logits: the same network, no object channels."""
    import hashlib

    from safetensors.numpy import load_file, save_file

    digest = hashlib.sha256((bundle / "model.safetensors").read_bytes()).hexdigest()[:16]
    dst = OUT / f"{bundle.name}-no-objects-{digest}"  # a new model gets a new copy
    if dst.exists():
        return dst
    meta = json.loads((bundle / "geoseg.json").read_text())
    n = len(meta["classes"])
    weights = load_file(bundle / "model.safetensors")
    head = [k for k, v in weights.items() if v.shape and v.shape[0] == n + 3 * len(meta["objects"]["classes"])]
    for k in head:
        weights[k] = np.ascontiguousarray(weights[k][:n])
    dst.mkdir(parents=True)
    save_file(weights, dst / "model.safetensors")
    meta.pop("objects")
    (dst / "geoseg.json").write_text(json.dumps(meta, indent=1))
    return dst


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bundle", default="buildings-rgb")
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rss-sizes", default="4096,16384")
    ap.add_argument("--precision", default="auto", help="predict's --precision on both sides (auto: as a user runs it)")
    a = ap.parse_args()
    from geoseg.models.bundle import read_meta, resolve_bundle

    bundle = resolve_bundle(a.bundle)
    if read_meta(bundle).objects is None:
        raise SystemExit(f"{a.bundle}: this bundle has no object channels")
    plain_bundle = without_objects(bundle)
    scene = mosaic(a.size)
    common = ["--no-progress", "--overwrite"]
    pred = common + ["--precision", a.precision]
    small = mosaic(1024)  # warm-up: engine conversion and caches, not timed
    for b in (bundle, plain_bundle):
        run(["predict", str(b), str(small), "-o", str(OUT / "warm"), *pred])
    runs: dict[str, list] = {k: [] for k in ("predict", "predict, no objects", "vectorize", "vectorize --split-touching")}
    classes = OUT / "plain" / f"{scene.stem}.classes.tif"
    for _ in range(a.repeats):
        runs["predict"].append(run(["predict", str(bundle), str(scene), "-o", str(OUT / "objects"), *pred]))
        runs["predict, no objects"].append(run(["predict", str(plain_bundle), str(scene), "-o", str(OUT / "plain"),
                                                *pred]))
        vec = ["vectorize", str(classes), "--min-area", "4", "--connectivity", "8", *common]
        runs["vectorize"].append(run(vec + ["-o", str(OUT / "plain.gpkg")]))
        runs["vectorize --split-touching"].append(run(vec + ["-o", str(OUT / "split.gpkg"), "--split-touching"]))
    import pyogrio

    n_obj = pyogrio.read_info(OUT / "objects" / f"{scene.stem}.instances.gpkg", layer="instances")["features"]
    print(f"cpu: {cpu_model()}")
    print(f"bundle {a.bundle}, --precision {a.precision}, scene {a.size}² ({n_obj} objects decoded), "
          f"{a.repeats} interleaved repeats")
    med = {k: statistics.median(s for s, _ in v) for k, v in runs.items()}
    for k, v in runs.items():
        print(f"{k:28s} median {med[k]:7.2f} s  runs " + ", ".join(f"{s:.2f}" for s, _ in v)
              + f"  peak RSS median {statistics.median(m for _, m in v):.0f} MB")
    base = med["predict, no objects"]
    print(f"decoding adds {100 * (med['predict'] - base) / base:+.1f}% to predict")
    print(f"--split-touching adds {100 * (med['vectorize --split-touching'] - med['vectorize']) / base:+.1f}% "
          f"of predict time ({med['vectorize --split-touching'] - med['vectorize']:+.2f} s to vectorize)")
    rss = {}
    for size in (int(s) for s in a.rss_sizes.split(",") if s):
        big = mosaic(size)
        t = time.perf_counter()
        s, m = run(["predict", str(bundle), str(big), "-o", str(OUT / f"rss{size}"), *pred])
        rss[size] = m
        n = pyogrio.read_info(OUT / f"rss{size}" / f"{big.stem}.instances.gpkg", layer="instances")["features"]
        print(f"predict with decoding, {size}²: {s:.1f} s, {n} objects, peak RSS {m:.0f} MB "
              f"({time.perf_counter() - t:.0f} s)")
        shutil.rmtree(OUT / f"rss{size}")
        if size > a.size:
            os.remove(big)
    if len(rss) > 1:
        lo, hi = min(rss), max(rss)
        print(f"peak RSS growth {lo}² -> {hi}²: {100 * (rss[hi] - rss[lo]) / rss[lo]:+.1f}%")


if __name__ == "__main__":
    main()
