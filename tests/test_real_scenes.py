"""Real scenes from ../shared/data through the installed ``geoseg`` command."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import rasterio
import torch

from geoseg.classes import ClassList
from geoseg.models import create_model
from geoseg.models.bundle import BundleMeta, save_bundle
from tests.conftest import known_class


def geoseg(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "geoseg", *map(str, args)], capture_output=True, text=True)


def test_spacenet_atlanta_chip_through_the_cli(shared_data, tmp_path):
    # A 1-band deterministic bundle; std 25 puts the class boundaries at half-integer pixel values.
    meta = BundleMeta("conv1x1", "none", (1,), (0.0,), (25.0,),
                      ClassList.from_names(["background", "building", "water"]), tile_size=256, overlap=64)
    model = create_model("conv1x1", "none", 1, 3)
    with torch.no_grad():
        model.head.weight.copy_(torch.tensor([0.0, 1.0, 2.0]).reshape(3, 1, 1, 1))
        model.head.bias.copy_(torch.tensor([0.0, -85.5, -256.0]))
    bundle = save_bundle(model, meta, tmp_path / "pan")
    scene = shared_data / "solaris" / "sample_geotiff.tif"
    r = geoseg("predict", bundle, scene, "-o", tmp_path / "out", "--chunk-size", "300", "--no-progress")
    assert r.returncode == 0, r.stderr
    out = tmp_path / "out" / "sample_geotiff.classes.tif"
    assert r.stdout.strip() == str(out)
    with rasterio.open(scene) as src, rasterio.open(out) as dst:
        assert dst.crs == src.crs and dst.crs.to_epsg() == 32616
        assert dst.transform == src.transform and dst.shape == (900, 900)
        pix = src.read(1)
        got = dst.read(1)
    expected = known_class((pix / 25.0)[None])
    expected[pix == 0] = 255
    np.testing.assert_array_equal(got, expected)
    assert set(np.unique(got)) >= {0, 1, 2}


def test_landsat_scene_through_the_cli(shared_data, linear_bundle, tmp_path):
    scene = shared_data / "rasterio" / "RGB.byte.tif"  # striped, with a nodata collar
    r = geoseg("predict", linear_bundle, scene, "-o", tmp_path / "out", "--probabilities", "--workers", "2",
               "--no-progress")
    assert r.returncode == 0, r.stderr
    with rasterio.open(scene) as src, rasterio.open(tmp_path / "out" / "RGB.byte.classes.tif") as dst:
        data = src.read()
        assert dst.crs == src.crs and dst.transform == src.transform
        got = dst.read(1)
    expected = known_class(data)
    expected[(data == 0).all(axis=0)] = 255
    np.testing.assert_array_equal(got, expected)
    assert (got == 255).mean() > 0.2  # the collar is nodata
    with rasterio.open(tmp_path / "out" / "RGB.byte.probs.tif") as p:
        assert p.count == 3 and p.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
