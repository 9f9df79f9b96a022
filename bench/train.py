"""Benchmark: training throughput with geoseg's data pipeline against pre-cut in-memory chips.

Usage::

    python bench/train.py            # U-Net/ResNet-18, 256 px chips, batch 8, 3 interleaved repeats
    python bench/train.py --quick
    python bench/train.py --zoom-turn  # chips also zoomed (+-25%) and turned (any angle)

Both sides run the same model, loss and optimiser for the same number of steps
on the CPU. geoseg's side draws chips with windowed reads from a 3-band GeoTIFF
and rasterizes the vector labels per chip (``SceneChips`` through a
DataLoader with ``--workers`` processes); the baseline indexes chips cut
beforehand into memory. The printed ratio is geoseg's chips/s over the
baseline's.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
sys.path.insert(0, str(HERE))


def make_data(size: int, zoom_turn: bool = False):
    import geopandas as gpd
    import shapely
    import yaml
    from scenes import write_scene

    scene = write_scene(OUT / f"train_scene_{size}.tif", size, seed=5)
    labels = OUT / f"train_labels_{size}.geojson"
    if not labels.exists():
        import rasterio

        rng = np.random.default_rng(5)
        with rasterio.open(scene) as src:
            t = src.transform
        polys = []
        for _ in range(size * size // 20000):
            y, x = rng.integers(0, size - 30, 2)
            h, w = rng.integers(6, 30, 2)
            x0, y0 = t * (x, y)
            x1, y1 = t * (x + w, y + h)
            polys.append(shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)))
        gpd.GeoDataFrame({"class": ["building"] * len(polys)}, geometry=polys, crs="EPSG:32616").to_file(labels)
    cfg = {"classes": [{"id": 0, "name": "background", "vectorize": False}, {"id": 1, "name": "building"}],
           "bands": [1, 2, 3],
           "scenes": [{"image": str(scene), "labels": {"path": str(labels), "class_field": "class"}}],
           "validation": {"block_size": 512, "fraction": 0.1},
           "model": {"architecture": "unet", "encoder": "resnet18", "chip_size": 256},
           "sampling": {"chips_per_epoch": 10_000},
           "augment": {"scale": 0.25, "rotate": 180} if zoom_turn else {}}
    path = OUT / "train_bench.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def steps(model, opt, batches, n: int) -> float:
    import torch

    from geoseg.training.loop import _loss

    t0 = time.perf_counter()
    it = iter(batches)
    for _ in range(n):
        x, y = next(it)
        x = x.contiguous(memory_format=torch.channels_last)
        opt.zero_grad(set_to_none=True)
        _loss(model(x), y, "ce+dice", 2).backward()
        opt.step()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--zoom-turn", action="store_true", help="augment.scale 0.25 and augment.rotate 180")
    args = ap.parse_args()
    if args.quick:
        args.size, args.steps, args.repeats = 1024, 3, 1
    OUT.mkdir(exist_ok=True)
    import torch

    from geoseg.models import create_model
    from geoseg.training import load_config
    from geoseg.training.data import SceneChips, band_statistics, open_scene

    cfg = load_config(make_data(args.size, args.zoom_turn))
    src = open_scene(cfg.scenes[0], cfg)
    mean, std = band_statistics([src], cfg.bands)
    ds = SceneChips([src], cfg, mean, std)
    n_chips = args.steps * args.batch
    # the baseline's chips: cut once, into memory
    cut = [ds[i] for i in range(n_chips)]
    xs = torch.stack([c[0] for c in cut])
    ys = torch.stack([c[1] for c in cut])

    def in_memory():
        for b in range(0, n_chips, args.batch):
            yield xs[b : b + args.batch], ys[b : b + args.batch]

    torch.manual_seed(0)
    model = create_model("unet", "resnet18", 3, 2).to(memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    steps(model, opt, in_memory(), 1)  # warm up
    print(f"U-Net/ResNet-18, {cfg.model.chip_size} px chips, batch {args.batch}, {args.steps} steps, "
          f"{args.workers} loader worker(s), {torch.get_num_threads()} torch threads"
          + (", chips zoomed and turned" if args.zoom_turn else ""))
    rows = {"baseline": [], "geoseg": []}
    for r in range(args.repeats):
        t = steps(model, opt, in_memory(), args.steps)
        rows["baseline"].append(n_chips / t)
        ds.set_epoch(r + 1)
        loader = torch.utils.data.DataLoader(ds, batch_size=args.batch, num_workers=args.workers,
                                             prefetch_factor=4 if args.workers else None,
                                             multiprocessing_context="spawn" if args.workers else None)
        t = steps(model, opt, loader, args.steps)
        rows["geoseg"].append(n_chips / t)
        print(f"  repeat {r + 1}: baseline {rows['baseline'][-1]:.2f} chips/s, geoseg {rows['geoseg'][-1]:.2f} chips/s",
              flush=True)
    b, g = statistics.median(rows["baseline"]), statistics.median(rows["geoseg"])
    print(f"\n| pipeline | median chips/s |\n|---|---|\n| in-memory chips (baseline) | {b:.2f} |\n"
          f"| geoseg windowed reads + rasterized labels | {g:.2f} |\n| ratio | **{g / b:.2f}** |")


if __name__ == "__main__":
    main()
