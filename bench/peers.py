"""Benchmark: ``geoseg predict buildings-rgb`` against GeoDeep and against geoseg on torch, side by side.

Usage::

    python bench/peers.py --sizes 4096,8192 --repeats 3

The scene is real imagery: the SpaceNet Rio scene of ``../shared/data`` (WorldView-2 RGB, 0.5 m)
mirrored into an ``N x N`` tiled GeoTIFF at 0.5 m in UTM 23S. Each run is its own process, which
reports its wall time from before its first geoseg/GeoDeep import to the written output, and its
peak RSS (``ru_maxrss``); the kinds run interleaved, ``--repeats`` times, and medians are printed.

Kinds:

- ``geodeep``: GeoDeep (PyPI ``geodeep``), ONNX Runtime over windows, a whole-scene uint8 mask,
  hard-cropped overlaps. The model is ``buildings-rgb`` exported to ONNX in GeoDeep's layout
  (NCHW, uint8 / 255 in, its normalisation folded into the graph), with GeoDeep's metadata keys
  (``model_type`` Segmentor, ``resolution`` 50 cm/px, ``tiles_overlap`` = geoseg's 64 px of 512 as a
  percentage). GeoDeep always runs a whole-scene 5x5 median filter on its mask after the model;
  here it is **patched out** (``geodeep.geodeep.median_filter`` returns its input), so GeoDeep's
  figures are the windows, the model and its small-segment filter only. GeoDeep writes nothing: the
  child writes its mask as a deflate GeoTIFF, as geoseg writes its classes.
- ``geoseg-auto``: ``geoseg predict buildings-rgb`` as a user runs it (the default install:
  OpenVINO, the precision ``auto`` picks on this CPU), classes COG plus the instances GeoPackage.
- ``geoseg-fp32``: the same with ``--precision fp32`` (the exact engine, GeoDeep's work).
- ``geoseg-torch``: the same with ``--engine torch``: the baseline of the 2x target.
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
OUT = HERE / "out" / "geodeep"
RIO = HERE.parent.parent / "shared" / "data" / "spacenet-utilities" / "AOI_0_TEST_3band_Small_mask.tif"
KINDS = ("geodeep", "geoseg-auto", "geoseg-fp32", "geoseg-torch")


def make_scene(size: int) -> Path:
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin

    path = OUT / f"rio-mosaic-{size}.tif"
    if path.exists():
        return path
    OUT.mkdir(parents=True, exist_ok=True)
    with rasterio.open(RIO) as src:
        img = src.read()
    h, w = img.shape[1:]
    profile = dict(driver="GTiff", width=size, height=size, count=3, dtype="uint8", crs="EPSG:32723",
                   transform=from_origin(680000, 7460000, 0.5, 0.5), tiled=True, blockxsize=512, blockysize=512,
                   compress="DEFLATE", photometric="RGB")
    tmp = path.with_suffix(".partial.tif")
    with rasterio.open(tmp, "w", **profile) as dst:
        for r0 in range(0, size, 1024):
            rows = np.arange(r0, min(size, r0 + 1024))
            ry = np.abs((rows // h % 2) * (h - 1) - rows % h)  # mirrored copies: no seams in the content
            cols = np.arange(size)
            rx = np.abs((cols // w % 2) * (w - 1) - cols % w)
            dst.write(img[:, ry][:, :, rx], window=rasterio.windows.Window(0, r0, size, len(rows)))
    tmp.rename(path)
    return path


def make_geodeep_model() -> Path:
    """buildings-rgb as GeoDeep loads a model: an ONNX file, NCHW, uint8 / 255 in, metadata for its keys."""
    path = OUT / "buildings-rgb-geodeep.onnx"
    if path.exists():
        return path
    import onnx
    import torch

    from geoseg.data import DEFAULT_MODEL
    from geoseg.models.bundle import load_bundle

    b = load_bundle(DEFAULT_MODEL)
    k = len(b.meta.classes)
    mean = torch.tensor(b.meta.mean).view(1, -1, 1, 1) / 255
    std = torch.tensor(b.meta.std).view(1, -1, 1, 1) / 255

    class GeoDeepLayout(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, x):  # GeoDeep divides uint8 by 255; geoseg's normalisation follows
            return torch.softmax(self.model((x - mean) / std)[:, :k], 1)

    t = b.meta.tile_size
    OUT.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(GeoDeepLayout(b.model.float().eval()), (torch.zeros(1, 3, t, t),), str(path),
                          input_names=["input"], output_names=["output"], opset_version=18, dynamo=False)
    m = onnx.load(str(path))
    for key, value in {"model_type": json.dumps("Segmentor"), "resolution": "50",
                       "tiles_overlap": str(100 * b.meta.overlap / t), "class_names": json.dumps(
                           {str(c.id): c.name for c in b.meta.classes}), "seg_thresh": "0.5",
                       "seg_small_segment": "11"}.items():
        e = m.metadata_props.add()
        e.key, e.value = key, value
    onnx.save(m, str(path))
    return path


def child(kind: str, scene: str, out: str) -> None:
    t0 = time.perf_counter()
    if kind == "geodeep":
        import geodeep.geodeep as gd
        import numpy as np
        import rasterio

        gd.median_filter = lambda arr, size=5: arr  # always runs on the whole mask otherwise: patched out
        mask = gd.run(scene, str(make_geodeep_model()), output_type="raw", max_threads=os.cpu_count())
        with rasterio.open(scene) as src:
            profile = dict(driver="GTiff", width=src.width, height=src.height, count=1, dtype="uint8",
                           crs=src.crs, transform=src.transform, tiled=True, compress="DEFLATE")
        Path(out).mkdir(parents=True, exist_ok=True)
        with rasterio.open(Path(out) / "mask.tif", "w", **profile) as dst:
            dst.write(np.asarray(mask, np.uint8), 1)
        tiles = None
    else:
        from geoseg.cli.main import main as geoseg_main

        engine, precision = {"geoseg-auto": ("auto", "auto"), "geoseg-fp32": ("openvino", "fp32"),
                             "geoseg-torch": ("torch", "fp32")}[kind]
        # the command line itself, as a user runs it (its process setup included), in this process
        sys.argv = ["geoseg", "predict", "buildings-rgb", scene, "-o", out, "--no-progress", "--overwrite",
                    "--engine", engine, "--precision", precision]
        try:
            geoseg_main()
        except SystemExit as exc:
            if exc.code:
                raise
        tiles = None
    seconds = time.perf_counter() - t0
    print(json.dumps({"seconds": seconds, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "tiles": tiles}))


def measure(kind: str, scene: Path) -> dict:
    out = OUT / f"run-{kind}"
    r = subprocess.run([sys.executable, __file__, "--child", kind, "--scene", str(scene), "--out", str(out)],
                       capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"{kind} failed: {r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", choices=KINDS)
    ap.add_argument("--scene")
    ap.add_argument("--out")
    ap.add_argument("--sizes", default="4096,8192")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--kinds", default=",".join(KINDS))
    args = ap.parse_args()
    if args.child:
        child(args.child, args.scene, args.out)
        return
    from geoseg.engines import resolve
    from geoseg.engines.cpu import describe
    from geoseg.models.bundle import read_meta, resolve_bundle

    bundle = resolve_bundle("buildings-rgb")
    auto = resolve("auto", "auto", read_meta(bundle), "cpu", bundle)
    print(f"CPU: {describe()}; geoseg auto here: {auto.engine} {auto.precision}")
    make_geodeep_model()
    kinds = args.kinds.split(",")
    # geoseg's conversions are cached before the clock, as GeoDeep's ONNX file is made before it
    from geoseg.engines.quantize import fp32_model

    fp32_model(bundle, read_meta(bundle))
    for size in (int(s) for s in args.sizes.split(",")):
        scene = make_scene(size)
        rows: dict[str, list[dict]] = {k: [] for k in kinds}
        for rep in range(args.repeats):
            for kind in kinds:
                r = measure(kind, scene)
                rows[kind].append(r)
                print(f"{size}² {kind} repeat {rep + 1}: {r['seconds']:.1f} s, {r['rss_mb']:.0f} MB", flush=True)
        torch_s = statistics.median(r["seconds"] for r in rows.get("geoseg-torch", [])) if "geoseg-torch" in rows \
            else None
        print(f"\n{size}², median of {args.repeats}:")
        print("| run | seconds | MP/s | vs geoseg torch | peak RSS |\n|---|---|---|---|---|")
        for kind in kinds:
            s = statistics.median(r["seconds"] for r in rows[kind])
            m = statistics.median(r["rss_mb"] for r in rows[kind])
            ratio = f"{torch_s / s:.2f}x" if torch_s else "–"
            runs = ', '.join(format(r['seconds'], '.1f') for r in rows[kind])
            print(f"| {kind} | {s:.1f} ({runs}) | "
                  f"{size * size / 1e6 / s:.2f} | {ratio} | {m:.0f} MB |")


if __name__ == "__main__":
    main()
