"""Shared fixtures: seeded synthetic scenes, a deterministic bundle, and ../shared/data."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
import torch
from rasterio.transform import from_origin

from geoseg.classes import ClassList
from geoseg.models import create_model
from geoseg.models.bundle import BundleMeta, save_bundle

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GEOSEG_SHARED_DATA", ROOT.parent / "shared" / "data"))
UTM = "EPSG:32616"


@pytest.fixture(scope="session", autouse=True)
def _engine_cache(tmp_path_factory):
    """Engine conversions of the tests' bundles go to a temporary cache, not the user's."""
    old = os.environ.get("GEOSEG_CACHE_DIR")
    os.environ["GEOSEG_CACHE_DIR"] = str(tmp_path_factory.mktemp("engine-cache"))
    yield
    if old is None:
        os.environ.pop("GEOSEG_CACHE_DIR", None)
    else:
        os.environ["GEOSEG_CACHE_DIR"] = old


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real fixtures of ../shared/data (CI has them beside the checkout)."""
    assert SHARED.is_dir(), f"shared test data not found at {SHARED} (set GEOSEG_SHARED_DATA)"
    return SHARED


def write_scene(path: Path, data: np.ndarray, *, crs: str | None = UTM, nodata: float | None = 0,
                transform=None, tiled: bool = True) -> Path:
    """Write a ``(bands, h, w)`` array as a GeoTIFF."""
    count, h, w = data.shape
    profile = dict(driver="GTiff", width=w, height=h, count=count, dtype=data.dtype, crs=crs,
                   transform=transform or from_origin(733600.0, 3725200.0, 0.5, 0.5), nodata=nodata)
    if tiled:
        profile.update(tiled=True, blockxsize=256, blockysize=256)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def structured_scene(h: int, w: int, bands: int = 3, seed: int = 0) -> np.ndarray:
    """uint8 bands with smooth structure plus noise, values 1..255 (0 is nodata)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = []
    for b in range(bands):
        fy, fx = rng.uniform(0.005, 0.05, 2)
        base = 127 + 90 * np.sin(yy * fy + b) * np.cos(xx * fx - b)
        out.append(np.clip(base + rng.normal(0, 25, (h, w)), 1, 255))
    return np.stack(out).astype(np.uint8)


# The deterministic model: logits are linear in the pixel's band mean m (0..255):
# l0 = 0, l1 = m - 85.5, l2 = 2m - 256. Its class is 0 below m = 85.5, 1 up to 170.5, then 2.
# m is a multiple of 1/3, so the winning logit leads by at least 1/6: no near-ties.
def known_class(data: np.ndarray) -> np.ndarray:
    m = data.astype(np.float64).mean(axis=0)
    logits = np.stack([np.zeros_like(m), m - 85.5, 2 * m - 256.0])
    return np.argmax(logits, axis=0).astype(np.uint8)


def make_linear_bundle(path: Path, bands: int = 3, tile_size: int = 128, overlap: int = 32) -> Path:
    classes = ClassList.from_names(["background", "building", "water"])
    meta = BundleMeta("conv1x1", "none", tuple(range(1, bands + 1)), (0.0,) * bands, (1.0,) * bands,
                      classes, tile_size=tile_size, overlap=overlap, gsd=0.5)
    model = create_model("conv1x1", "none", bands, 3)
    with torch.no_grad():
        w = model.head.weight
        w.zero_()
        w[1, :, 0, 0] = 1.0 / bands
        w[2, :, 0, 0] = 2.0 / bands
        model.head.bias.copy_(torch.tensor([0.0, -85.5, -256.0]))
    return save_bundle(model, meta, path)


@pytest.fixture(scope="session")
def linear_bundle(tmp_path_factory) -> Path:
    return make_linear_bundle(tmp_path_factory.mktemp("bundles") / "linear")


@pytest.fixture(scope="session")
def unet_bundle(tmp_path_factory) -> Path:
    """A small random U-Net: a real CNN whose tiles see their neighbourhood."""
    classes = ClassList.from_names(["background", "building", "road", "water"])
    meta = BundleMeta("unet", "resnet18", (1, 2, 3), (127.0,) * 3, (60.0,) * 3, classes,
                      tile_size=64, overlap=16, arch_params={"decoder_channels": [32, 16, 16, 8, 8]})
    torch.manual_seed(0)
    model = create_model("unet", "resnet18", 3, 4, meta.arch_params)
    return save_bundle(model, meta, tmp_path_factory.mktemp("bundles") / "unet")


@pytest.fixture(scope="session")
def seam_scene(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """A 3-band 700x900 scene with nodata holes, an all-nodata corner and a nodata border row."""
    data = structured_scene(700, 900)
    data[:, 100:140, 200:260] = 0          # a hole crossing tile seams
    data[:, 600:, :150] = 0               # a corner that is entirely nodata
    data[0:2, 300:310, 400:420] = 0       # nodata in some bands only: still valid
    path = write_scene(tmp_path_factory.mktemp("scenes") / "seam.tif", data)
    return path, data


def assert_one_line_error(result, *needles: str) -> str:
    """A CLI result that failed with one ``geoseg: error:`` line containing ``needles``, and no traceback."""
    assert result.exit_code == 1, (result.exit_code, result.output)
    err = result.stderr.strip()
    assert "\n" not in err, err
    assert err.startswith("geoseg: error: "), err
    assert "Traceback" not in result.output
    for n in needles:
        assert n in err, (n, err)
    return err


def noisy_rectangles(seed=0):
    """Rotated rectangles burnt into pixels (staircase edges) with a few edge pixels flipped: class 1."""
    from rasterio.features import rasterize

    rng = np.random.default_rng(seed)
    shapes_ = []
    for k, (angle, w, h) in enumerate(((0, 30, 18), (20, 26, 16), (35, 34, 20), (60, 22, 22), (80, 40, 14),
                                       (10, 18, 30))):
        cy, cx = 40 + 80 * (k // 3), 40 + 80 * (k % 3)
        shapes_.append(shapely.affinity.rotate(shapely.box(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), angle))
    arr = rasterize([(g, 1) for g in shapes_], out_shape=(170, 250), dtype="uint8")
    edge = arr.astype(bool) & ~np.pad(arr.astype(bool), 1, mode="edge")[2:, 1:-1]
    flip = np.argwhere(edge)
    flip = flip[rng.random(len(flip)) < 0.3]
    arr[flip[:, 0], flip[:, 1]] = 0
    return arr, len(shapes_)
