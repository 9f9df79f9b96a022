"""Benchmark: geoseg's tiled instance prediction against a SAHI-style baseline, side by side.

Usage::

    python bench/instances.py            # oracle at 2048² and 8192², Mask R-CNN at 1024², x3 interleaved
    python bench/instances.py --quick

The baseline slices the scene with the same tiles and overlap, runs the same model per slice, pastes
every detection into a **full-image-size** boolean mask (as SAHI's ObjectPrediction does) and merges
predictions greedily by **box IoU** > 0.5 (mask union), highest score first. geoseg keeps cropped masks,
assigns each detection to the tile whose core holds its centre and merges cut objects by mask IoS.

Scenes hold a fixed 24 objects (discs and squares, some on tile seams and corners, and two bars longer
than a tile): at 8192² each full-size mask costs 64 MB, so a realistic object density would not fit
the baseline in this machine's memory at all. Each run is a subprocess reporting its seconds (imports
excluded), peak RSS, and its duplicate and split counts against the untiled oracle.
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
OUT = HERE / "out" / "instances"
TILE, OVERLAP = 256, 64
WORKERS = 2


def make_scene(size: int, seed: int = 0) -> Path:
    import rasterio
    from rasterio.transform import from_origin

    path = OUT / f"oracle_{size}.tif"
    if path.exists():
        return path
    rng = np.random.default_rng(seed)
    a = np.full((size, size), 40, np.uint8)
    for k in range(22):
        r = int(rng.integers(6, 24))
        if k < 8:  # on a tile seam: centred in an overlap band
            y = int(rng.integers(1, size // (TILE - OVERLAP))) * (TILE - OVERLAP) + OVERLAP // 2
            x = int(rng.integers(r, size - r))
        else:
            y, x = int(rng.integers(r, size - r)), int(rng.integers(r, size - r))
        a[max(0, y - r) : y + r, max(0, x - r) : x + r] = 200
    a[0:10, 0:10] = 200  # a corner
    a[size // 3 : size // 3 + 10, size // 8 : size // 8 + 3 * TILE] = 200  # bars longer than a tile
    a[size // 2 : size // 2 + 3 * TILE, size // 5 : size // 5 + 12] = 200
    OUT.mkdir(parents=True, exist_ok=True)
    profile = dict(driver="GTiff", width=size, height=size, count=1, dtype="uint8", crs="EPSG:32616",
                   transform=from_origin(733600.0, 3725200.0, 0.5, 0.5), tiled=True, blockxsize=512,
                   blockysize=512, compress="deflate")
    with rasterio.open(path.with_suffix(".partial.tif"), "w", **profile) as dst:
        dst.write(a, 1)
    path.with_suffix(".partial.tif").rename(path)
    return path


def make_bundles() -> dict[str, Path]:
    from geoseg.models.bundle import init_bundle

    b = {"oracle": OUT / "oracle-bundle", "maskrcnn": OUT / "maskrcnn-bundle"}
    if not b["oracle"].exists():
        init_bundle("components", b["oracle"], encoder="none", bands=(1,), classes="object", tile_size=TILE,
                    overlap=OVERLAP)
    if not b["maskrcnn"].exists():
        init_bundle("maskrcnn", b["maskrcnn"], encoder="mobilenet_v3_large", bands=(1,), classes="object",
                    tile_size=TILE, overlap=OVERLAP, mean=(60.0,), std=(40.0,))
    return b


def run_geoseg(bundle: str, scene: str, workers: int):
    from geoseg.prediction import PredictOptions, predict

    out = OUT / f"geoseg-{Path(scene).stem}"
    return predict(bundle, [scene], out, PredictOptions(progress=False, overwrite=True, workers=workers))[0]


def crops_geoseg(result) -> list[tuple[int, int, np.ndarray]]:
    """Each instance of NAME.instances.gpkg rasterized on its own box (after the timing)."""
    import geopandas as gpd
    import rasterio
    from rasterio import features

    gdf = gpd.read_file(result.instances_gpkg, layer="instances")
    with rasterio.open(result.instances) as src:
        inv = ~src.transform
        crops = []
        for geom in gdf.geometry:
            x0, y1, x1, y0 = geom.bounds  # map coordinates, north up
            c0, r0 = (int(round(v)) for v in inv * (x0, y0))
            c1, r1 = (int(round(v)) for v in inv * (x1, y1))
            t = src.transform * rasterio.Affine.translation(c0, r0)
            crops.append((r0, c0, features.rasterize([geom], out_shape=(r1 - r0, c1 - c0), transform=t).astype(bool)))
    return crops


def crops_baseline(bundle: str, scene: str) -> list[tuple[int, int, np.ndarray]]:
    """SAHI-style: slices, full-image-size masks, greedy box-IoU merging."""
    import rasterio

    from geoseg.inference.tiling import TileGrid
    from geoseg.instances.predictor import get_instance_predictor

    pred = get_instance_predictor(bundle, "cpu")
    with rasterio.open(scene) as src:
        h, w = src.height, src.width
        grid = TileGrid(h, w, TILE, OVERLAP)
        mean = np.float32(pred.meta.mean[0])
        dets = []  # (score, box x0 y0 x1 y1, full-size mask)
        for t in grid.tiles():
            win = rasterio.windows.Window(t.x, t.y, min(TILE, w - t.x), min(TILE, h - t.y))
            arr = src.read(1, window=win).astype(np.float32)
            tile = np.full((1, 1, TILE, TILE), mean, np.float32)
            tile[0, 0, : arr.shape[0], : arr.shape[1]] = arr
            for d in pred.detect(tile, 0.5)[0]:
                if d.score < 0.5:
                    continue
                full = np.zeros((h, w), dtype=bool)
                y0, x0 = t.y + d.y0, t.x + d.x0
                m = d.mask[: h - y0, : w - x0]
                full[y0 : y0 + m.shape[0], x0 : x0 + m.shape[1]] = m
                if not full.any():
                    continue
                dets.append([d.score, [x0, y0, x0 + m.shape[1], y0 + m.shape[0]], full])
    dets.sort(key=lambda d: -d[0])
    kept = []
    used = [False] * len(dets)
    for i, (_score, box, mask) in enumerate(dets):
        if used[i]:
            continue
        used[i] = True
        for j in range(i + 1, len(dets)):
            if used[j]:
                continue
            b = dets[j][1]
            ix = max(0, min(box[2], b[2]) - max(box[0], b[0]))
            iy = max(0, min(box[3], b[3]) - max(box[1], b[1]))
            inter = ix * iy
            union = (box[2] - box[0]) * (box[3] - box[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
            if union and inter / union > 0.5:
                mask = mask | dets[j][2]
                box = [min(box[0], b[0]), min(box[1], b[1]), max(box[2], b[2]), max(box[3], b[3])]
                used[j] = True
        kept.append((box[1], box[0], mask[box[1] : box[3], box[0] : box[2]]))
    return kept


def quality(crops, scene: str) -> dict:
    """Duplicates (an object found more than once) and splits (an object cut into pieces) against the
    untiled oracle."""
    import rasterio
    from scipy import ndimage

    with rasterio.open(scene) as src:
        lab, n = ndimage.label(src.read(1) > 127.5)
    hits: dict[int, list[float]] = {}
    for y, x, m in crops:
        inside = lab[y : y + m.shape[0], x : x + m.shape[1]][m]
        for c in np.unique(inside[inside > 0]):
            hits.setdefault(int(c), []).append(float((inside == c).sum()))
    sizes = np.bincount(lab.ravel())
    dup = sum(1 for c, v in hits.items() if sum(1 for a in v if a == sizes[c]) > 1)
    split = sum(1 for c, v in hits.items() if len(v) > 1 and max(v) < sizes[c])
    return {"objects": int(n), "instances": len(crops), "duplicates": dup, "splits": split}


def child(kind: str, bundle: str, scene: str, check: bool, workers: int) -> None:
    import geoseg.instances.predictor  # noqa: F401  (imports are not timed)
    import geoseg.prediction  # noqa: F401

    t0 = time.perf_counter()
    result = run_geoseg(bundle, scene, workers) if kind == "geoseg" else crops_baseline(bundle, scene)
    dt = time.perf_counter() - t0
    crops = crops_geoseg(result) if kind == "geoseg" else result
    res = {"seconds": dt, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if check:
        res.update(quality(crops, scene))
    print(json.dumps(res))


def measure(kind: str, bundle: Path, scene: Path, mp: float, check: bool) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, str(bundle), str(scene), "--workers", str(WORKERS)] \
        + (["--check"] if check else [])
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"{kind} failed:\n{r.stderr[-3000:]}")
    res = json.loads(r.stdout.strip().splitlines()[-1])
    res["mps"] = mp / res["seconds"]
    extra = f" dup {res['duplicates']} split {res['splits']} ({res['instances']} for {res['objects']})" \
        if check else ""
    print(f"  {kind:9s} {res['seconds']:8.2f} s {res['mps']:7.2f} MP/s {res['rss_mb']:7.0f} MB{extra}", flush=True)
    return res


def compare(title: str, bundle: Path, scene: Path, size: int, repeats: int, check: bool) -> dict:
    print(f"{title}, interleaved x{repeats}")
    rows = {"baseline": [], "geoseg": []}
    for _ in range(repeats):
        for k in ("baseline", "geoseg"):
            rows[k].append(measure(k, bundle, scene, size * size / 1e6, check))
    med = {k: statistics.median(r["mps"] for r in v) for k, v in rows.items()}
    rss = {k: statistics.median(r["rss_mb"] for r in v) for k, v in rows.items()}
    print(f"| run | median MP/s | median peak RSS (MB) |\n|---|---|---|\n| baseline | {med['baseline']:.3f} | "
          f"{rss['baseline']:.0f} |\n| geoseg | {med['geoseg']:.3f} | {rss['geoseg']:.0f} |\n"
          f"| **ratio** | **{med['geoseg'] / med['baseline']:.2f}x** | |\n")
    return {"rss": rss, "mps": med}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", nargs=3, metavar=("KIND", "BUNDLE", "SCENE"))
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--workers", type=int, default=2, help="geoseg's Dask workers (threads)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sizes", default="2048,8192")
    ap.add_argument("--maskrcnn-size", type=int, default=1024)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    global WORKERS
    WORKERS = args.workers
    if args.child:
        return child(*args.child, args.check, args.workers)
    if args.quick:
        args.repeats, args.sizes, args.maskrcnn_size = 1, "1024,2048", 512
    bundles = make_bundles()
    sizes = [int(s) for s in args.sizes.split(",")]
    results = {s: compare(f"oracle, {s}²", bundles["oracle"], make_scene(s), s, args.repeats, True) for s in sizes}
    a, b = sizes[0], sizes[-1]
    for k in ("baseline", "geoseg"):
        print(f"{k}: peak RSS {a}² -> {b}²: {results[a]['rss'][k]:.0f} -> {results[b]['rss'][k]:.0f} MB "
              f"({100 * (results[b]['rss'][k] / results[a]['rss'][k] - 1):+.1f}%)")
    s = args.maskrcnn_size
    compare(f"\nMask R-CNN (MobileNetV3, random weights), {s}²", bundles["maskrcnn"], make_scene(s), s,
            args.repeats, False)


if __name__ == "__main__":
    main()
