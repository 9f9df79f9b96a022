"""Benchmark: what the workflow machinery (ledger, hashing, chunk checkpoints, STAC, report) costs, and
how fast a killed run resumes.

Usage::

    python bench/workflow.py            # the full run recorded in bench/RESULTS.md
    python bench/workflow.py --quick    # a small smoke run

1. Overhead: ``geoseg run`` (predict + vectorize) over a folder of 20 small scenes with the null model,
   against the same public functions called directly in a loop on the same kind of local Dask
   cluster. Each measurement is a fresh subprocess (cluster start included for both), alternating,
   ``--repeats`` times; medians.
2. Resume: ``geoseg run`` on a large scene is killed (SIGKILL, its whole process group) when 80% of
   its chunks are saved; the re-run's wall time against a clean run from zero, alternating.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
OUT = HERE / "out" / "workflow"
sys.path.insert(0, str(HERE))
ENV = dict(os.environ, PYTHONWARNINGS="ignore")


def bundle(kind: str) -> Path:
    from geoseg.models.bundle import init_bundle

    path = OUT / kind
    if not path.exists():
        if kind == "null":
            init_bundle("conv1x1", path, encoder="none", bands=(1, 2, 3), mean=(128.0,) * 3, std=(50.0,) * 3,
                        tile_size=512, overlap=32)
        else:
            init_bundle("unet", path, encoder="resnet18", bands=(1, 2, 3), mean=(128.0,) * 3, std=(50.0,) * 3,
                        tile_size=512, overlap=32)
    return path


def direct_loop(args) -> None:
    """The baseline: the same steps, called one scene at a time, on a local cluster like geoseg run's."""
    from distributed import Client, LocalCluster

    from geoseg.inference.scheduler import silence_dask
    from geoseg.io.inputs import resolve_inputs
    from geoseg.prediction import PredictOptions, predict
    from geoseg.vector.vectorize import VectorizeOptions, vectorize

    silence_dask()
    t0 = time.perf_counter()
    out = Path(args.out)
    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as lc, Client(lc) as client:
        for scene in resolve_inputs([args.scenes]):
            o = predict(args.bundle, [scene], out, PredictOptions(chunk_size=args.chunk_size, overwrite=True,
                                                                  progress=False), client=client)[0]
            vectorize(o.classes, out / (Path(scene).stem + ".gpkg"),
                      VectorizeOptions(min_area=2, overwrite=True, progress=False), client=client)
    print(f"SECONDS {time.perf_counter() - t0:.3f}")


def workflow(path: Path, scenes: Path, model: Path, out: Path, chunk_size: int, workers: int) -> Path:
    path.write_text(yaml.safe_dump(dict(
        inputs=[str(scenes)], model=str(model), output=str(out),
        steps=[{"predict": {"chunk_size": chunk_size}}, {"vectorize": {"min_area": 2}}] if "many" in path.name
        else [{"predict": {"chunk_size": chunk_size}}],
        cluster={"local": {"workers": workers}})))
    return path


def timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=ENV)
    if r.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr[-2000:]}")
    return time.perf_counter() - t0


def overhead(n: int, size: int, repeats: int, workers: int) -> tuple[list[float], list[float]]:
    from scenes import write_scene

    scenes = OUT / f"many-{size}"
    scenes.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        write_scene(scenes / f"s{k:02d}.tif", size, seed=k)
    model = bundle("null")
    geo, base = [], []
    for r in range(repeats):
        out_w, out_b = OUT / "many-run", OUT / "many-direct"
        for o in (out_w, out_b):
            shutil.rmtree(o, ignore_errors=True)
        wf = workflow(OUT / "many.yaml", scenes, model, out_w, 1024, workers)
        # the baseline's wall time from process start (imports and cluster start, as geoseg run's)
        base.append(timed([sys.executable, __file__, "--direct", "--bundle", str(model), "--scenes", str(scenes),
                           "--out", str(out_b), "--workers", str(workers), "--chunk-size", "1024"]))
        geo.append(timed([sys.executable, "-m", "geoseg", "run", str(wf)]))
        print(f"  repeat {r + 1}: geoseg run {geo[-1]:.2f} s, direct loop {base[-1]:.2f} s", flush=True)
    return geo, base


def resume(size: int, repeats: int, workers: int, kind: str, chunk: int) -> tuple[list[float], list[float]]:
    from scenes import write_scene

    scenes = OUT / f"large-{size}"
    scenes.mkdir(parents=True, exist_ok=True)
    write_scene(scenes / "large.tif", size, seed=11)
    model = bundle(kind)
    from geoseg.inference.tiling import TileGrid
    from geoseg.models.bundle import read_meta

    meta = read_meta(model)  # chunks are whole tiles of the scene's grid
    total = sum(map(len, TileGrid(size, size, meta.tile_size, meta.overlap).blocks(chunk)))
    resumed, clean = [], []
    for r in range(repeats):
        out = OUT / "large-run"
        shutil.rmtree(out, ignore_errors=True)
        wf = workflow(OUT / "large.yaml", scenes, model, out, chunk, workers)
        clean.append(timed([sys.executable, "-m", "geoseg", "run", str(wf)]))
        shutil.rmtree(out, ignore_errors=True)
        proc = subprocess.Popen([sys.executable, "-m", "geoseg", "run", str(wf)], env=ENV, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        store = out / ".geoseg-chunks"
        while True:
            saved = sum(len(list(d.glob("chunk-*.npz"))) for d in store.glob("*")) if store.exists() else 0
            if saved >= 0.8 * total:
                break
            if proc.poll() is not None:
                raise SystemExit("the run ended before 80% of its chunks were saved")
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        resumed.append(timed([sys.executable, "-m", "geoseg", "run", str(wf)]))
        print(f"  repeat {r + 1}: killed at {saved}/{total} chunks; resume {resumed[-1]:.2f} s, clean run "
              f"{clean[-1]:.2f} s", flush=True)
    return resumed, clean


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--scenes-n", type=int, default=20)
    ap.add_argument("--scene-size", type=int, default=1024)
    ap.add_argument("--large-size", type=int, default=8192)
    ap.add_argument("--resume-model", default="unet", choices=["unet", "null"])
    ap.add_argument("--direct", action="store_true")
    ap.add_argument("--bundle"), ap.add_argument("--scenes"), ap.add_argument("--out")
    ap.add_argument("--chunk-size", type=int, default=1024)
    ap.add_argument("--large-chunk", type=int, default=2048)
    ap.add_argument("--only", choices=["overhead", "resume"], default=None)
    args = ap.parse_args()
    if args.direct:
        return direct_loop(args)
    if args.quick:
        args.repeats, args.scenes_n, args.large_size, args.large_chunk = 1, 4, 2048, 512
    OUT.mkdir(parents=True, exist_ok=True)
    import platform

    from geoseg.engines.cpu import describe

    print(f"machine: {os.cpu_count()} CPUs, {describe()}, python {platform.python_version()}")
    if args.only != "resume":
        run_overhead(args)
    if args.only != "overhead":
        run_resume(args)


def run_overhead(args) -> None:
    print(f"\n1) {args.scenes_n} scenes of {args.scene_size}² px, null model, predict + vectorize, "
          f"{args.workers} local workers, x{args.repeats} alternating")
    geo, base = overhead(args.scenes_n, args.scene_size, args.repeats, args.workers)
    g, b = statistics.median(geo), statistics.median(base)
    print(f"   geoseg run {g:.2f} s, direct loop {b:.2f} s: overhead {100 * (g / b - 1):+.1f}% (target at most 5%)")


def run_resume(args) -> None:
    print(f"\n2) resume after SIGKILL at 80% of a {args.large_size}² scene ({args.resume_model} model, chunks of "
          f"{args.large_chunk}), x{args.repeats} alternating")
    res, clean = resume(args.large_size, args.repeats, args.workers, args.resume_model, args.large_chunk)
    r, c = statistics.median(res), statistics.median(clean)
    print(f"   resume {r:.2f} s, clean run {c:.2f} s: {r / c:.2f}x (target at most 0.3x)")


if __name__ == "__main__":
    main()
