"""``predict --refine crf``: does it help ``buildings-rgb``, what does it cost, and its memory at 8192².

    python bench/crf.py [--tune | --quality] [--size 8192] [--repeats 3]

``--tune``: CRF settings picked on the training config's validation blocks of the Rio scene
(``configs/train/rio_buildings.yaml``; the test blocks, the demo crop and the chips are never looked
at), by building IoU: a grid over the bilateral and Gaussian kernels.

``--quality``: the packaged ``buildings-rgb`` on its held-out data, through the CLI as a user runs it,
with and without ``--refine crf`` (default settings): the demo crop (``geoseg/data/rio``, against its
footprints) and the 15 SpaceNet Rio chips of ``../shared/data/spacenet_buildings_exploration``
(another part of the city; references built as ``tests/test_default_models.py`` builds them). Scored by
``geoseg evaluate``: building IoU of the class raster; object F1 of ``NAME.instances.gpkg`` (from the
object channels, which the CRF does not touch) and of the class raster's own components (the class
raster scored without the instances beside it).

Timing: ``predict`` of a ``--size``² mosaic of the Rio scene with and without ``--refine crf``,
interleaved, ``--repeats`` times, subprocesses timed by wall clock with their peak RSS; the CRF's
seconds per megapixel are the difference over the scene's megapixels.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out" / "crf"
CHIPS = ROOT.parent / "shared" / "data" / "spacenet_buildings_exploration"
sys.path.insert(0, str(Path(__file__).resolve().parent))

from regularize import cpu_model, run  # noqa: E402


def geoseg(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "geoseg", *args], check=True, stdout=subprocess.DEVNULL)


def chips() -> tuple[Path, Path]:
    import rasterio

    img_dir, ref_dir = OUT / "chips", OUT / "chips_ref"
    if ref_dir.exists():
        return img_dir, ref_dir
    img_dir.mkdir(parents=True)
    ref_dir.mkdir()
    for img in sorted((CHIPS / "3band").glob("*.tif")):
        with rasterio.open(img) as s:
            pixels, profile = s.read(), s.profile
        with rasterio.open(CHIPS / "building_mask_vis" / img.name) as m:
            mask = m.read(1, masked=False)
        ref = (mask > 0).astype(np.uint8)
        ref[(pixels == 0).all(0)] = 255
        profile.update(count=1, dtype="uint8", nodata=255)
        with rasterio.open(ref_dir / img.name, "w", **profile) as dst:
            dst.write(ref, 1)
        shutil.copy(img, img_dir / img.name)
    return img_dir, ref_dir


def scores(report: Path) -> tuple[float, float, tuple[int, int, int]]:
    r = json.loads(report.read_text())
    b = next(c for c in r["classes"] if c["name"] == "building")
    o = r["objects"]["building"]
    return b["iou"], o["f1"], (o["tp"], o["fp"], o["fn"])


def quality(crf: str | None) -> None:
    classes = ROOT / "configs" / "classes" / "buildings.yaml"
    img_dir, ref_dir = chips()
    crop = ROOT / "geoseg" / "data" / "rio" / "rio_heldout.tif"
    crop_ref = crop.with_name("rio_heldout_buildings.geojson")
    crf_args = ["--refine", "crf"] + (["--crf", crf] if crf else [])
    for name, extra in (("plain", []), ("crf", crf_args)):
        for data, inputs in (("crop", crop), ("chips", img_dir)):
            pred = OUT / f"{data}-{name}"
            geoseg("predict", "buildings-rgb", str(inputs), "-o", str(pred), "--no-progress", "--overwrite", *extra)
            components = OUT / f"{data}-{name}-components"  # the class rasters alone: their components as objects
            shutil.rmtree(components, ignore_errors=True)
            components.mkdir()
            for f in pred.glob("*.classes.tif"):
                shutil.copy(f, components / f.name)
            for what, folder in (("instances", pred), ("components", components)):
                audit = OUT / f"audit-{data}-{name}-{what}"
                if data == "crop":
                    args = [str(folder / "rio_heldout.classes.tif"), str(crop_ref), "--reference-class", "building"]
                else:
                    args = [str(folder), str(ref_dir), "--classes", str(classes)]
                geoseg("evaluate", *args, "-o", str(audit), "--no-audit", "--overwrite", "--no-progress")
                iou, f1, counts = scores(audit / "report.json")
                print(f"{data:6s} {name:6s} objects from {what:10s} building IoU {iou:.3f}  object F1 {f1:.3f} "
                      f"(TP/FP/FN {counts[0]}/{counts[1]}/{counts[2]})", flush=True)


def timing(size: int, repeats: int) -> None:
    subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(ROOT / 'bench')!r}); "
                    f"import objects; objects.mosaic({size})"], check=True)  # built in a child (see cluster.py)
    scene = ROOT / "bench" / "out" / "objects" / f"rio_mosaic_{size}.tif"
    runs: dict[str, list] = {"predict": [], "predict --refine crf": []}
    common = ["--no-progress", "--overwrite"]
    for _ in range(repeats):
        runs["predict"].append(run(["predict", "buildings-rgb", str(scene), "-o", str(OUT / "t-plain"), *common]))
        runs["predict --refine crf"].append(run(["predict", "buildings-rgb", str(scene), "-o", str(OUT / "t-crf"),
                                                 "--refine", "crf", *common]))
    print(f"cpu: {cpu_model()}")
    print(f"buildings-rgb on a {size}² Rio mosaic, {repeats} interleaved repeats")
    med = {k: statistics.median(s for s, _ in v) for k, v in runs.items()}
    for k, v in runs.items():
        print(f"{k:22s} median {med[k]:7.2f} s  runs " + ", ".join(f"{s:.2f}" for s, _ in v)
              + f"  peak RSS median {statistics.median(m for _, m in v):.0f} MB")
    mp = size * size / 1e6
    print(f"the CRF adds {med['predict --refine crf'] - med['predict']:.1f} s: "
          f"{(med['predict --refine crf'] - med['predict']) / mp:.2f} s per megapixel "
          f"({med['predict --refine crf'] / med['predict']:.2f}x predict)")


RIO = ROOT.parent / "shared" / "data" / "spacenet-utilities" / "AOI_0_TEST_3band_Small_mask.tif"
VALIDATION = [(3, 0), (0, 4)]  # configs/train/rio_buildings.yaml's validation blocks (700 px); never the test blocks


def tune() -> None:
    """CRF settings chosen on the training config's validation blocks of the Rio scene (building IoU)."""
    import itertools

    import geopandas as gpd
    import rasterio
    from rasterio.features import rasterize

    from geoseg.models.bundle import read_meta, resolve_bundle
    from geoseg.refine.crf import CRFSettings, band_features, refine_probabilities

    pred = OUT / "tune"
    geoseg("predict", "buildings-rgb", str(RIO), "-o", str(pred), "--probabilities", "--no-progress", "--overwrite")
    meta = read_meta(resolve_bundle("buildings-rgb"))
    with rasterio.open(RIO) as src:
        img, transform, shape = src.read(), src.transform, src.shape
    probs = rasterio.open(pred / f"{RIO.stem}.probs.tif").read().astype(np.float32) + 0.5
    labels = gpd.read_file(RIO.with_name("AOI_0_TEST_BuildingLabels.geojson")).to_crs(rasterio.open(RIO).crs)
    truth = rasterize(labels.geometry, out_shape=shape, transform=transform).astype(bool)
    feats = band_features(img, meta.mean, meta.std)
    halo = 128

    def iou(settings) -> float:
        tp = fp = fn = 0
        for i, j in VALIDATION:
            y, x = i * 700, j * 700
            y1, x1 = min(shape[0], y + 700), min(shape[1], x + 700)
            ya, xa, yb, xb = max(0, y - halo), max(0, x - halo), min(shape[0], y1 + halo), min(shape[1], x1 + halo)
            p = probs[:, ya:yb, xa:xb]
            lab = (p.argmax(0) if settings is None else
                   refine_probabilities(p, feats[:, ya:yb, xa:xb], settings).argmax(0))[y - ya : y1 - ya, x - xa : x1 - xa]
            t = truth[y:y1, x:x1]
            tp, fp, fn = tp + (lab.astype(bool) & t).sum(), fp + (lab.astype(bool) & ~t).sum(), fn + (~lab.astype(bool) & t).sum()
        return tp / (tp + fp + fn)

    print(f"validation blocks {VALIDATION}: building IoU without CRF {iou(None):.4f}")
    rows = []
    for bw, bsxy, srgb, (gsxy, gw) in itertools.product((3, 5, 10), (10, 20, 40, 80), (3, 5, 13), ((1, 3), (3, 3))):
        s = CRFSettings(gaussian_sxy=gsxy, gaussian_weight=gw, bilateral_sxy=bsxy, bilateral_srgb=srgb,
                        bilateral_weight=bw)
        rows.append((iou(s), s))
        print(f"bilateral weight {bw:2d} sxy {bsxy:2d} srgb {srgb:2d}, gaussian sxy {gsxy} weight {gw}: "
              f"IoU {rows[-1][0]:.4f}", flush=True)
    best = max(rows, key=lambda r: r[0])
    print(f"best: {best[1].to_dict()} IoU {best[0]:.4f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quality", action="store_true")
    ap.add_argument("--tune", action="store_true")
    ap.add_argument("--crf", default=None, help="--quality: CRF settings (key=value,...) instead of the defaults")
    ap.add_argument("--size", type=int, default=8192)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    if a.tune:
        tune()
    elif a.quality:
        quality(a.crf)
    else:
        timing(a.size, a.repeats)


if __name__ == "__main__":
    main()
