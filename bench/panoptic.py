"""Benchmark: geoseg's COCO panoptic scorer against panopticapi's ``pq_compute`` on the same files, side by side.

Usage::

    python bench/panoptic.py --repeats 3 [--tile 200]

The data is real: the SpaceNet Rio scene of ``../shared/data`` (3464 x 3339 px, 2,335 footprints)
mirrored into an ``--size`` mosaic as ``bench/peers.py`` makes it (8192² by default), with
``geoseg predict buildings-rgb --panoptic`` on it as the prediction and the footprints, mirrored the
same way, one instance each on background stuff, as the reference. Both are cut into ``--tile``-pixel
images (256 at 512 px) and written as COCO panoptic sets (RGB PNGs beside their JSON), so each scorer
reads PNGs and JSON as it would for COCO. Each run is its own process and reports the scoring call's wall time
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


def mirror_index(n: int, size: int):
    """Source rows (or columns) of bench/peers.py's mirrored mosaic: copies of the scene, every other one flipped."""
    import numpy as np

    i = np.arange(size)
    return np.abs((i // n % 2) * (n - 1) - i % n), i // n


def predicted(scene: Path, folder: Path) -> Path:
    """``geoseg predict buildings-rgb --panoptic`` on the scene (once)."""
    out = folder / f"{scene.stem}.panoptic.tif"
    if not out.exists():
        subprocess.run([sys.executable, "-c", "from geoseg.cli.main import main; main()", "predict", "buildings-rgb",
                        str(scene), "-o", str(folder), "--panoptic", "--no-progress", "--overwrite"], check=True,
                       capture_output=True)
    return out


def make_sets(tile: int, size: int) -> tuple[Path, Path]:
    """The COCO panoptic sets; ``size``: the scene mirrored into a ``size`` x ``size`` mosaic (0: the scene)."""
    import geopandas as gpd
    import numpy as np
    import rasterio
    from rasterio.features import rasterize

    from geoseg.benchmarks.coco_panoptic import write_panoptic

    gt_json, pred_json = OUT / f"gt{size}-{tile}.json", OUT / f"pred{size}-{tile}.json"
    if gt_json.exists() and pred_json.exists():
        return gt_json, pred_json
    scene = RIO
    if size:
        sys.path.insert(0, str(HERE))
        from peers import make_scene

        scene = make_scene(size)
    with rasterio.open(predicted(scene, OUT / f"predict{size}")) as src:
        pan, shape = src.read(), (src.height, src.width)
    with rasterio.open(RIO) as src:
        t, crs, rio_shape = src.transform, src.crs, (src.height, src.width)
    feats = gpd.read_file(LABELS).to_crs(crs)
    ref_inst = rasterize(((g, i + 1) for i, g in enumerate(feats.geometry)), out_shape=rio_shape, transform=t,
                         fill=0, dtype="int64")
    if size:  # the footprints mirrored as the imagery is, each copy's instances numbered apart
        ry, ky = mirror_index(rio_shape[0], size)
        rx, kx = mirror_index(rio_shape[1], size)
        copy = ky[:, None] * (size // rio_shape[1] + 1) + kx[None, :]
        ref_inst = np.where(ref_inst[ry][:, rx] > 0, ref_inst[ry][:, rx] + copy * 10_000, 0)
    assert ref_inst.shape == shape
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
    write_panoptic(gt_json.with_suffix(""), gt_json, gt_images, CATEGORIES)
    write_panoptic(pred_json.with_suffix(""), pred_json, pred_images, CATEGORIES)
    return gt_json, pred_json


def scene_rasters(size: int) -> tuple[Path, Path]:
    """The mosaic's NAME.panoptic.tif and its reference as a two-band (class, instance) GeoTIFF."""
    import numpy as np
    import rasterio

    sys.path.insert(0, str(HERE))
    from peers import make_scene

    scene = make_scene(size)
    pred = predicted(scene, OUT / f"predict{size}")
    ref = OUT / f"reference{size}.tif"
    if not ref.exists():
        import geopandas as gpd
        from rasterio.features import rasterize

        with rasterio.open(RIO) as src:
            t, crs, rio_shape = src.transform, src.crs, (src.height, src.width)
        feats = gpd.read_file(LABELS).to_crs(crs)
        inst0 = rasterize(((g, i + 1) for i, g in enumerate(feats.geometry)), out_shape=rio_shape, transform=t,
                          fill=0, dtype="int64")
        ry, ky = mirror_index(rio_shape[0], size)
        rx, kx = mirror_index(rio_shape[1], size)
        with rasterio.open(pred) as src:
            profile = dict(driver="GTiff", width=size, height=size, count=2, dtype="uint32", crs=src.crs,
                           transform=src.transform, tiled=True, compress="DEFLATE")
        with rasterio.open(ref, "w", **profile) as dst:
            for r0 in range(0, size, 1024):
                rows = slice(r0, min(size, r0 + 1024))
                copy = ky[rows, None] * (size // rio_shape[1] + 1) + kx[None, :]
                inst = inst0[ry[rows]][:, rx]
                inst = np.where(inst > 0, inst + copy * 10_000, 0)
                dst.write(np.stack([(inst > 0), inst]).astype(np.uint32),
                          window=rasterio.windows.Window(0, r0, size, rows.stop - r0))
    return pred, ref


def evaluate_memory(sizes: list[int]) -> None:
    """Peak RSS and wall time of ``geoseg evaluate --panoptic`` (whole scenes, chunked) per scene size."""
    classes = OUT / "classes.yaml"
    classes.write_text("classes:\n  - {id: 0, name: background, color: '#000000', vectorize: false}\n"
                       "  - {id: 1, name: building, color: '#e31a1c', isthing: true}\n")
    for size in sizes:
        pred, ref = scene_rasters(size)
        code = ("import resource, sys, time; t = time.perf_counter(); from geoseg.cli.main import main; sys.argv = "
                f"['geoseg', 'evaluate', {str(pred)!r}, {str(ref)!r}, '-o', {str(OUT / f'eval{size}')!r}, "
                "'--panoptic', '--no-audit', '--no-progress', '--overwrite']\n"
                "try:\n    main()\nexcept SystemExit:\n    pass\n"
                "print('RESULT', time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        line = next(ln for ln in out.splitlines() if ln.startswith("RESULT"))
        pan = json.loads((OUT / f"eval{size}" / "report.json").read_text())["panoptic"]
        _, secs, rss = line.split()
        print(f"evaluate --panoptic {size}²: {float(secs):.1f} s, peak RSS {float(rss):.0f} MB; PQ {pan['All']['pq']:.6f} "
              f"(things {pan['Things']['pq']:.6f}, TP {pan['per_class'][1]['tp']})")
        # the panoptic pass alone (the command also scores the class band and its objects, which hold polygons)
        code = ("import resource, time; t = time.perf_counter()\n"
                "from geoseg.evaluation.evaluate import EvaluateOptions\n"
                "from geoseg.evaluation.panoptic_scenes import evaluate_panoptic_scene\n"
                "from geoseg.classes import load_classes\n"
                "from geoseg.inference.scheduler import open_runner\n"
                "from geoseg.io.raster import gdal_cache\n"
                "o = EvaluateOptions(panoptic=True, progress=False)\n"
                "with open_runner(None, None, None) as r, gdal_cache():  # as geoseg evaluate runs it\n"
                f"    s = evaluate_panoptic_scene({str(pred)!r}, {str(ref)!r}, load_classes({str(classes)!r}), o, r)\n"
                "print('RESULT', time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "
                "s[1].tp)")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        _, secs, rss, tp = next(ln for ln in out.splitlines() if ln.startswith("RESULT")).split()
        print(f"  the panoptic pass alone: {float(secs):.1f} s, peak RSS {float(rss):.0f} MB (TP {tp})")


def child(kind: str, gt: str, pred: str) -> None:
    t0 = time.perf_counter()
    if kind == "pq_compute":
        import contextlib
        import io

        from panopticapi.evaluation import pq_compute

        t1 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            res = pq_compute(gt, pred, gt.replace(".json", ""), pred.replace(".json", ""))
        res = {k: ({str(c): v for c, v in r.items()} if k == "per_class" else r) for k, r in res.items()}
    else:
        from geoseg import benchmarks

        t1 = time.perf_counter()
        block = benchmarks.get("coco-panoptic").score(pred, gt)["panoptic"]
        res = {k: block[k] for k in ("All", "Things", "Stuff")}
        res["per_class"] = {str(c["id"]): {m: c[m] for m in ("pq", "sq", "rq")} for c in block["per_class"]}
    t2 = time.perf_counter()
    print(json.dumps({"seconds": t2 - t1, "with_import": t2 - t0, "result": res}))


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
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--size", type=int, default=8192, help="the Rio scene mirrored into this mosaic (0: as it is)")
    ap.add_argument("--evaluate-sizes", default=None,
                    help="instead: peak memory of evaluate --panoptic on mosaics of these sizes, e.g. 4096,8192")
    args = ap.parse_args()
    if args.evaluate_sizes:
        evaluate_memory([int(v) for v in args.evaluate_sizes.split(",")])
        return
    gt, pred = make_sets(args.tile, args.size)
    n = len(json.loads(gt.read_text())["annotations"])
    times: dict[str, list[float]] = {"pq_compute": [], "geoseg": []}
    whole: dict[str, list[float]] = {"pq_compute": [], "geoseg": []}
    results = {}
    for _ in range(args.repeats):
        for kind in times:  # interleaved
            r = run(kind, gt, pred)
            times[kind].append(r["seconds"])
            whole[kind].append(r["with_import"])
            results[kind] = r["result"]
    med = {k: statistics.median(v) for k, v in times.items()}
    med_whole = {k: statistics.median(v) for k, v in whole.items()}
    print(f"{n} images of {args.tile} x {args.tile} px; medians of {args.repeats} (s), the scoring call: "
          + ", ".join(f"{k} {v:.3f}" for k, v in med.items()) + "; with the imports: "
          + ", ".join(f"{k} {v:.3f}" for k, v in med_whole.items()))
    print(f"speed-up {med['pq_compute'] / med['geoseg']:.2f}x (with the imports "
          f"{med_whole['pq_compute'] / med_whole['geoseg']:.2f}x); identical numbers: "
          f"{same(results['geoseg'], results['pq_compute'])}; PQ {results['geoseg']['All']['pq']:.6f} "
          f"(things {results['geoseg']['Things']['pq']:.6f}, stuff {results['geoseg']['Stuff']['pq']:.6f})")
    print("all runs (s): " + json.dumps({k: [round(x, 3) for x in v] for k, v in times.items()}))
    subprocess.run(["sh", "-c", "lscpu | grep -E 'Model name|Flags' | cut -c1-300"])


if __name__ == "__main__":
    main()
