"""``geoseg cluster --method kmeans`` against ``geoseg predict`` with the null model, on one large scene.

    python bench/cluster.py [--size 16384] [--bands 4] [--k 6] [--repeats 3] [--slic 40px]

The scene is ``scenes.write_scene`` (smooth land-cover fields, bright roofs, noise, a nodata corner),
uint8, DEFLATE, 512 px tiles, in a UTM CRS. Side by side, interleaved, ``--repeats`` times, each a
``geoseg`` subprocess (process start included) timed by its wall clock, with its peak RSS:

- ``predict`` with the null model (``conv1x1``, one 1x1 convolution over the same bands, torch fp32):
  the cost of reading the scene, tiling, blending and writing a class COG with almost no model;
- ``cluster --method kmeans --k K``: sampling (a full read of the scene's blocks), the fit on
  200,000 pixels, a second read to assign every pixel, and the cluster COG.

The target (issue 29): cluster within 2x of that predict, peak RSS under 1.5 GB. The scene and the
null bundle are made in a child process first: a child forked from a parent holding the scene would
start its peak RSS at the parent's.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out" / "cluster"
sys.path.insert(0, str(Path(__file__).resolve().parent))

from regularize import cpu_model, run  # noqa: E402
from scenes import write_scene  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=16384)
    ap.add_argument("--bands", type=int, default=4)
    ap.add_argument("--k", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--slic", default=None, help="also time --method slic with this --segment-size (40px)")
    ap.add_argument("--prepare", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    scene, null = OUT / f"scene{a.size}x{a.bands}.tif", OUT / f"null{a.bands}"
    if a.prepare:
        from geoseg.models.bundle import init_bundle

        write_scene(scene, a.size, bands=a.bands)
        if not null.exists():
            init_bundle("conv1x1", null, encoder="none", bands=tuple(range(1, a.bands + 1)),
                        mean=(128.0,) * a.bands, std=(64.0,) * a.bands, classes="a,b", tile_size=512, overlap=32)
        return
    # the scene and bundle are made in a child: a forked child's peak RSS starts at its parent's
    subprocess.run([sys.executable, __file__, "--prepare", "--size", str(a.size), "--bands", str(a.bands)],
                   check=True)
    common = ["--no-progress", "--overwrite"]
    runs: dict[str, list] = {"predict (null model)": [], f"cluster --k {a.k}": []}
    slic = f"cluster --method slic --segment-size {a.slic}"
    if a.slic:
        runs[slic] = []
    for _ in range(a.repeats):
        runs["predict (null model)"].append(run(["predict", str(null), str(scene), "-o", str(OUT / "pred"),
                                                 "--engine", "torch", "--precision", "fp32", *common]))
        runs[f"cluster --k {a.k}"].append(run(["cluster", str(scene), "-o", str(OUT / "clusters"), "--k",
                                               str(a.k), *common]))
        if a.slic:
            runs[slic].append(run(["cluster", str(scene), "-o", str(OUT / "clusters"), "--method", "slic",
                                   "--segment-size", a.slic, *common]))
    print(f"cpu: {cpu_model()}")
    print(f"scene {a.size}² x {a.bands} bands uint8, {a.repeats} interleaved repeats")
    med = {k: statistics.median(s for s, _ in v) for k, v in runs.items()}
    for k, v in runs.items():
        print(f"{k:44s} median {med[k]:7.2f} s  runs " + ", ".join(f"{s:.2f}" for s, _ in v)
              + f"  peak RSS median {statistics.median(m for _, m in v):.0f} MB")
    base, ours = med["predict (null model)"], med[f"cluster --k {a.k}"]
    print(f"cluster / predict: {ours / base:.2f}x")
    if a.slic:
        print(f"slic / predict: {med[slic] / base:.2f}x; slic {med[slic] / (a.size * a.size / 1e6):.3f} s per megapixel")
    shutil.rmtree(OUT / "pred", ignore_errors=True)
    shutil.rmtree(OUT / "clusters", ignore_errors=True)


if __name__ == "__main__":
    main()
