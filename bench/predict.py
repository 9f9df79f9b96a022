"""Benchmark: ``geoseg predict`` against a naive whole-raster baseline, side by side.

Usage::

    python bench/predict.py                 # the full run recorded in bench/RESULTS.md
    python bench/predict.py --quick         # a small smoke run

Each measurement runs in its own subprocess, which reports the seconds of its
work (imports excluded, identically for both) and its own peak RSS. geoseg
and the baseline run alternately, ``--repeats`` times, and medians are printed.

The baseline reads the whole raster into memory, runs the same model on
non-overlapping tiles one at a time in fp32 NCHW, and writes a GeoTIFF.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
sys.path.insert(0, str(HERE))


def make_bundles(encoder: str) -> dict[str, Path]:
    from geoseg.models.bundle import init_bundle

    bundles = {"unet": OUT / f"unet-{encoder}", "null": OUT / "null"}
    if not bundles["unet"].exists():
        init_bundle("unet", bundles["unet"], encoder=encoder, bands=(1, 2, 3), mean=(128.0,) * 3,
                    std=(50.0,) * 3, tile_size=512, overlap=32)
    if not bundles["null"].exists():
        init_bundle("conv1x1", bundles["null"], encoder="none", bands=(1, 2, 3), mean=(128.0,) * 3,
                    std=(50.0,) * 3, tile_size=512, overlap=32)
    return bundles


def run_geoseg(bundle: str, scene: str, out: str, engine: str = "torch", precision: str = "fp32") -> dict:
    """geoseg end to end; also the seconds the worker threads spent in the model (its share of the run)."""
    import threading

    from geoseg.inference.predictor import Predictor
    from geoseg.prediction import PredictOptions, predict

    spent, lock = [0.0], threading.Lock()
    real = Predictor.class_logits

    def timed(self, tiles):
        t0 = time.perf_counter()
        try:
            return real(self, tiles)
        finally:
            with lock:
                spent[0] += time.perf_counter() - t0

    Predictor.class_logits = timed
    opts = PredictOptions(progress=False, overwrite=True, engine=engine, precision=precision)
    predict(bundle, [scene], out, opts)
    from geoseg.inference.scheduler import default_workers

    return {"model_seconds": spent[0], "workers": opts.workers or default_workers()}


def run_baseline(bundle: str, scene: str, out: str) -> None:
    import numpy as np
    import rasterio
    import torch

    from geoseg.models.bundle import load_bundle

    b = load_bundle(bundle)
    model, meta, t = b.model.eval(), b.meta, b.meta.tile_size
    with rasterio.open(scene) as src:
        data = src.read(list(meta.bands)).astype(np.float32)
        profile = src.profile
    data = (data - np.array(meta.mean, np.float32)[:, None, None]) / np.array(meta.std, np.float32)[:, None, None]
    _, h, w = data.shape
    classes = np.zeros((h, w), dtype=np.uint8)
    with torch.inference_mode():
        for y in range(0, h, t):
            for x in range(0, w, t):
                tile = data[:, y : y + t, x : x + t]
                th, tw = tile.shape[1:]
                tile = np.pad(tile, [(0, 0), (0, t - th), (0, t - tw)], mode="reflect")
                logits = model(torch.from_numpy(np.ascontiguousarray(tile))[None])
                classes[y : y + th, x : x + tw] = logits[0].argmax(0)[:th, :tw].numpy()
    profile.update(count=1, dtype="uint8", nodata=255, compress="deflate", tiled=True)
    os.makedirs(out, exist_ok=True)
    with rasterio.open(Path(out) / "baseline.tif", "w", **profile) as dst:
        dst.write(classes, 1)


def child(args) -> None:
    import torch  # noqa: F401  imports are not timed, for either side

    import geoseg.prediction  # noqa: F401

    if args.child == "geoseg":
        import dask.delayed  # noqa: F401  what geoseg imports lazily, on its first run
        import dask.threaded  # noqa: F401

        import geoseg.engines.runtime  # noqa: F401
        import geoseg.inference.predictor

        engine, precision = (args.engine or "torch:fp32").split(":")
        if engine != "torch":  # convert before the clock starts: the cache is warm
            from geoseg.models.bundle import read_meta

            geoseg.inference.predictor.get_predictor(args.bundle, "auto", engine, precision,
                                           read_meta(args.bundle).tile_size, 2, 1)
            # only the conversion (on disk) is kept: the predictor is made in the timed run, as the
            # baseline loads its model in its own
            geoseg.inference.predictor._CACHE.clear()
    t0 = time.perf_counter()
    extra = run_geoseg(args.bundle, args.scene, args.out, engine, precision) if args.child == "geoseg" \
        else run_baseline(args.bundle, args.scene, args.out) or {}
    dt = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": dt, "rss_mb": rss, **extra}))


def measure(kind: str, bundle: Path, scene: Path, engine: str | None = None) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--bundle", str(bundle), "--scene", str(scene),
           "--out", str(OUT / f"pred-{kind}")] + (["--engine", engine] if engine else [])
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"{kind} failed:\n{r.stderr[-3000:]}")
    res = json.loads(r.stdout.strip().splitlines()[-1])
    import rasterio

    with rasterio.open(scene) as src:
        res["mp"] = src.width * src.height / 1e6
    res["mps"] = res["mp"] / res["seconds"]
    share = ""
    if res.get("model_seconds"):
        res["model_share"] = res["model_seconds"] / (res["seconds"] * res["workers"])
        share = f"  model {res['model_share']:.0%} of the workers' time"
    print(f"  {(engine or kind):18s} {scene.name:18s} {res['seconds']:8.1f} s {res['mps']:7.3f} MP/s "
          f"{res['rss_mb']:8.0f} MB{share}", flush=True)
    return res


def med(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", choices=["geoseg", "baseline"])
    ap.add_argument("--bundle")
    ap.add_argument("--scene")
    ap.add_argument("--out")
    ap.add_argument("--quick", action="store_true", help="small scenes, one repeat")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--encoder", default="resnet34")
    ap.add_argument("--compare-size", type=int, default=8192)
    ap.add_argument("--rss-sizes", default="4096,8192,16384")
    ap.add_argument("--null-size", type=int, default=16384)
    ap.add_argument("--engine", default=None, help="child: ENGINE:PRECISION")
    ap.add_argument("--engines", default=None,
                    help="only the engine rows: comma-separated ENGINE:PRECISION (e.g. torch:fp32,openvino:bf16) "
                         "against the naive baseline at --compare-size")
    ap.add_argument("--engine-rss-size", type=int, default=None,
                    help="with --engines: also each engine's peak RSS on a scene of this size (e.g. 16384)")
    ap.add_argument("--engine-rss-kinds", default=None, help="the engines for --engine-rss-size (default: all)")
    ap.add_argument("--ceiling", action="store_true",
                    help="the fp32 ceiling: the model's FLOPs per tile, this CPU's fp32 GEMM rate, and each exact "
                         "engine's steady time per tile (2 streams of 1 thread, as geoseg runs them)")
    args = ap.parse_args()
    if args.child:
        return child(args)
    if args.ceiling:
        return ceiling(args)
    if args.engines:
        return engine_rows(args)

    from scenes import write_scene

    OUT.mkdir(exist_ok=True)
    if args.quick:
        args.compare_size, args.rss_sizes, args.null_size, args.repeats = 1024, "1024,2048", 2048, 1
    bundles = make_bundles(args.encoder)
    sizes = sorted({args.compare_size, args.null_size, *map(int, args.rss_sizes.split(","))})
    scenes = {s: write_scene(OUT / f"scene_{s}.tif", s) for s in sizes}
    import torch

    print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__}, threads {torch.get_num_threads()}")

    print(f"\n1) U-Net-{args.encoder}, 512 px tiles, {args.compare_size} px scene, interleaved x{args.repeats}")
    geo, base = [], []
    for _ in range(args.repeats):
        base.append(measure("baseline", bundles["unet"], scenes[args.compare_size]))
        geo.append(measure("geoseg", bundles["unet"], scenes[args.compare_size]))

    print(f"\n2) geoseg peak RSS by scene size (U-Net-{args.encoder})")
    rss = {}
    for s in map(int, args.rss_sizes.split(",")):
        rss[s] = geo[0] if s == args.compare_size else measure("geoseg", bundles["unet"], scenes[s])

    print(f"\n3) null model (1x1 convolution), {args.null_size} px scene, x{args.repeats}")
    null = [measure("geoseg", bundles["null"], scenes[args.null_size]) for _ in range(args.repeats)]

    g, b = med(geo, "mps"), med(base, "mps")
    lo, hi = min(rss), max(rss)
    print("\n| measure | geoseg | baseline | ratio |\n|---|---|---|---|")
    print(f"| U-Net throughput, {args.compare_size}² (median MP/s) | {g:.3f} | {b:.3f} | **{g / b:.2f}×** |")
    print(f"| peak RSS, {args.compare_size}² (median MB) | {med(geo, 'rss_mb'):.0f} | {med(base, 'rss_mb'):.0f} | "
          f"{med(geo, 'rss_mb') / med(base, 'rss_mb'):.2f} |")
    for s, r in rss.items():
        print(f"| geoseg peak RSS, {s}² (MB) | {r['rss_mb']:.0f} | | |")
    print(f"| RSS growth {lo}² → {hi}² | {rss[hi]['rss_mb'] / rss[lo]['rss_mb'] - 1:+.1%} | | |")
    print(f"| null model, {args.null_size}² (median MP/s) | {med(null, 'mps'):.1f} | | |")
    print(f"| null model peak RSS (median MB) | {med(null, 'rss_mb'):.0f} | | |")


def engine_rows(args) -> None:
    """geoseg end to end with each engine and precision against the naive torch fp32 baseline, interleaved."""
    from scenes import write_scene

    from geoseg.engines.cpu import describe

    OUT.mkdir(exist_ok=True)
    bundle = make_bundles(args.encoder)["unet"]
    scene = write_scene(OUT / f"scene_{args.compare_size}.tif", args.compare_size)
    kinds = args.engines.split(",")
    print(f"CPU: {describe()}\nU-Net-{args.encoder}, 512 px tiles, {args.compare_size}² scene, "
          f"interleaved x{args.repeats}")
    rows = {k: [] for k in ["baseline", *kinds]}
    for _ in range(args.repeats):
        rows["baseline"].append(measure("baseline", bundle, scene))
        for k in kinds:
            rows[k].append(measure("geoseg", bundle, scene, k))
    b = med(rows["baseline"], "mps")
    print("\n| run | median MP/s | ratio to baseline | model share | median peak RSS (MB) |\n|---|---|---|---|---|")
    for k, v in rows.items():
        share = f"{med(v, 'model_share'):.0%}" if k != "baseline" else ""
        print(f"| {k} | {med(v, 'mps'):.3f} | {med(v, 'mps') / b:.2f}x | {share} | {med(v, 'rss_mb'):.0f} |")
    if args.engine_rss_size:  # peak RSS of every engine on a large scene, once each
        big = write_scene(OUT / f"scene_{args.engine_rss_size}.tif", args.engine_rss_size)
        print(f"\n| engine | peak RSS at {args.engine_rss_size}² (MB) | MP/s |\n|---|---|---|")
        for k in (args.engine_rss_kinds.split(",") if args.engine_rss_kinds else kinds):
            r = measure("geoseg", bundle, big, k)
            print(f"| {k} | {r['rss_mb']:.0f} | {r['mps']:.3f} |")


def ceiling(args) -> None:
    """What an exact (fp32) engine can gain over the baseline on this CPU, from first principles."""
    import threading

    import numpy as np
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from geoseg.engines import installed
    from geoseg.engines.cpu import describe
    from geoseg.inference.predictor import Predictor
    from geoseg.models.bundle import load_bundle

    OUT.mkdir(exist_ok=True)
    bundle = make_bundles(args.encoder)["unet"]
    model = load_bundle(bundle).model.eval()
    with FlopCounterMode(display=False) as fc, torch.inference_mode():
        model(torch.zeros(1, 3, 512, 512))
    flops = fc.get_total_flops()
    torch.set_num_threads(2)
    a, b = torch.randn(4096, 4096), torch.randn(4096, 4096)
    a @ b
    t0 = time.perf_counter()
    for _ in range(5):
        a @ b
    gemm = 5 * 2 * 4096**3 / (time.perf_counter() - t0)
    print(f"CPU: {describe()}\nU-Net-{args.encoder}, one 512² tile: {flops / 1e9:.1f} GFLOP; "
          f"fp32 GEMM (torch, 2 threads): {gemm / 1e9:.0f} GFLOP/s, i.e. at least {flops / gemm:.3f} s per tile")
    x = np.random.default_rng(0).normal(size=(1, 512, 512, 3)).astype(np.float32)

    def both(pred, n):  # two worker threads at once, as geoseg runs them
        threads = [threading.Thread(target=lambda: [pred.class_logits(x) for _ in range(n)]) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    for engine in [e for e in ("openvino", "onnxruntime") if installed(e)]:
        pred = Predictor(bundle, "cpu", engine=engine, precision="fp32", tile=512, streams=2, threads=1)
        both(pred, 1)  # each thread's first inference
        t0 = time.perf_counter()
        both(pred, 6)
        per_tile = (time.perf_counter() - t0) / 12
        print(f"{engine} fp32: {per_tile:.3f} s per tile, {flops / per_tile / 1e9:.0f} GFLOP/s "
              f"({flops / per_tile / gemm:.0%} of the GEMM rate)")


if __name__ == "__main__":
    main()
