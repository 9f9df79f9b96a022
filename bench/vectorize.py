"""Benchmark: ``geoseg vectorize`` against whole-array ``rasterio.features.shapes``, side by side.

Usage::

    python bench/vectorize.py            # 8192² class raster, ~20,000 polygons, 3 interleaved repeats
    python bench/vectorize.py --quick

Rows: geoseg (end to end, GeoPackage written), the baseline (``shapes`` over the
whole array in one thread, then ``GeoDataFrame.to_file`` with pyogrio), and
``gdal_polygonize.py`` when gdal-bin is installed. Each run is a subprocess
reporting its seconds and peak RSS; medians of the interleaved repeats.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
sys.path.insert(0, str(HERE))


def run_geoseg(raster: str, out: str) -> int:
    import pyogrio

    from geoseg.vector.vectorize import VectorizeOptions, vectorize

    vectorize(raster, out, VectorizeOptions(progress=False, overwrite=True))
    return sum(pyogrio.read_info(out, layer=n)["features"] for n, _ in pyogrio.list_layers(out) if n != "layer_styles")


def run_baseline(raster: str, out: str) -> int:
    import geopandas as gpd
    import rasterio
    import shapely
    from rasterio.features import shapes

    with rasterio.open(raster) as src:
        arr, transform, crs = src.read(1), src.transform, src.crs
    geoms, values = [], []
    for g, v in shapes(arr, mask=(arr != 0) & (arr != 255), transform=transform):
        geoms.append(shapely.geometry.shape(g))
        values.append(int(v))
    gdf = gpd.GeoDataFrame({"class_id": values}, geometry=geoms, crs=crs)
    Path(out).unlink(missing_ok=True)
    gdf.to_file(out, driver="GPKG", engine="pyogrio")
    return len(gdf)


def run_gdal(raster: str, out: str) -> int:
    Path(out).unlink(missing_ok=True)
    subprocess.run(["gdal_polygonize.py", "-q", raster, "-f", "GPKG", out, "classes", "class_id"], check=True)
    import pyogrio

    return pyogrio.read_info(out)["features"]


def child(kind: str, raster: str, out: str) -> None:
    import geopandas  # noqa: F401  imports are not timed

    import geoseg.vector.vectorize  # noqa: F401

    fn = {"geoseg": run_geoseg, "baseline": run_baseline}[kind]
    t0 = time.perf_counter()
    n = fn(raster, out)
    dt = time.perf_counter() - t0
    print(json.dumps({"seconds": dt, "features": n, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def measure(kind: str, raster: Path, mp: float) -> dict:
    out = OUT / f"vec-{kind}.gpkg"
    if kind == "gdal":
        t0 = time.perf_counter()
        n = run_gdal(str(raster), str(out))
        res = {"seconds": time.perf_counter() - t0, "features": n,
               "rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}
    else:
        r = subprocess.run([sys.executable, __file__, "--child", kind, str(raster), str(out)],
                           capture_output=True, text=True)
        if r.returncode:
            raise SystemExit(f"{kind} failed:\n{r.stderr[-3000:]}")
        res = json.loads(r.stdout.strip().splitlines()[-1])
    res["mps"] = mp / res["seconds"]
    print(f"  {kind:9s} {res['seconds']:7.2f} s {res['mps']:6.2f} MP/s {res['features']:7d} features "
          f"{res['rss_mb']:7.0f} MB", flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", nargs=3, metavar=("KIND", "RASTER", "OUT"))
    ap.add_argument("--size", type=int, default=8192)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--structure", choices=["blobs", "labyrinth"], default="blobs",
                    help="blobs: separate smooth blobs per class (the default); labyrinth: classes at the "
                         "quantiles of one field, whose middle classes percolate across the whole raster")
    ap.add_argument("--cells", type=int, default=None, help="blob size in pixels (default: ~20,000 polygons)")
    args = ap.parse_args()
    if args.child:
        return child(*args.child)
    from scenes import write_class_raster

    OUT.mkdir(exist_ok=True)
    if args.quick:
        args.size, args.repeats = 2048, 1
    cells = args.cells or (32 if args.structure == "blobs" else 26)
    raster = write_class_raster(OUT / f"classes_{args.structure}_{args.size}_{cells}.tif", args.size, cells=cells,
                                structure=args.structure)
    mp = args.size**2 / 1e6
    kinds = ["baseline", "geoseg"] + (["gdal"] if shutil.which("gdal_polygonize.py") else [])
    print(f"{args.size}² class raster ({args.structure}), 4 classes, interleaved x{args.repeats}")
    rows = {k: [] for k in kinds}
    for _ in range(args.repeats):
        for k in kinds:
            rows[k].append(measure(k, raster, mp))
    base = statistics.median(r["mps"] for r in rows["baseline"])
    print("\n| run | median MP/s | ratio to baseline | features | median peak RSS (MB) |\n|---|---|---|---|---|")
    for k in kinds:
        m = statistics.median(r["mps"] for r in rows[k])
        rss = statistics.median(r["rss_mb"] for r in rows[k])
        print(f"| {k} | {m:.2f} | {m / base:.2f}× | {rows[k][0]['features']} | {rss:.0f} |")


if __name__ == "__main__":
    main()
