"""predict --refine crf: class edges move onto image edges, and the refined raster is chunk-invariant."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch
from click.testing import CliRunner
from scipy import ndimage

from geoseg.classes import ClassList
from geoseg.cli.main import cli
from geoseg.errors import GeosegError
from geoseg.models import create_model
from geoseg.models.bundle import BundleMeta, save_bundle
from geoseg.refine.crf import CRFSettings, refine_probabilities
from tests.conftest import assert_one_line_error, write_scene


def test_crf_moves_a_blurred_boundary_onto_the_image_edge():
    h, w = 64, 200
    img = np.zeros((3, h, w), np.float32)
    img[:, :, 100:] = 200  # a sharp edge at column 100
    x = np.arange(w)
    p = 1 / (1 + np.exp(-(x - 112) / 6.0))  # the network's boundary: blurred, 12 px to the right
    probs = np.broadcast_to(np.stack([1 - p, p])[:, None, :], (2, h, w)).astype(np.float32)
    before = probs.argmax(0)
    after = refine_probabilities(probs, img, CRFSettings()).argmax(0)
    assert (before.argmax(1) == 113).all()
    assert (after.argmax(1) == 100).all() and (after[:, 100:] == 1).all()
    # without the bilateral term nothing pulls it to the edge: the smoothness kernel alone leaves it
    # within a pixel of where it was
    flat = refine_probabilities(probs, img, CRFSettings(bilateral_weight=0)).argmax(0)
    assert np.isin(flat.argmax(1), [112, 113]).all()


def blurred_discs(h=1100, w=1300, r=40, step=150, shift=8, seed=0):
    """Band 1: the discs blurred and shifted ``shift`` px right (what the model sees); band 2: sharp discs."""
    yy, xx = np.mgrid[:h, :w]
    truth = np.zeros((h, w), bool)
    for cy in range(60, h - 40, step):
        for cx in range(60, w - 40, step):
            truth |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    soft = ndimage.gaussian_filter(np.roll(truth, shift, axis=1).astype(np.float32), 6)
    rng = np.random.default_rng(seed)
    band1 = np.clip(20 + 200 * soft + rng.normal(0, 2, (h, w)), 1, 255).astype(np.uint8)
    band2 = np.clip(np.where(truth, 180, 60) + rng.normal(0, 4, (h, w)), 1, 255).astype(np.uint8)
    return np.stack([band1, band2]), truth


def disc_bundle(path):
    """A two-class per-pixel model on band 1 alone (band 2's weight is zero): building where band 1 > 120.

    Band 1's std is large so that it hardly enters the CRF's colour features; band 2 is the image edge."""
    classes = ClassList.from_names(["background", "building"])
    meta = BundleMeta("conv1x1", "none", (1, 2), (120.0, 120.0), (1000.0, 50.0), classes, tile_size=128,
                      overlap=32, gsd=0.5)
    model = create_model("conv1x1", "none", 2, 2)
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.weight[1, 0, 0, 0] = 40.0  # logit difference 40 * (b1 - 120) / 1000
        model.head.bias.zero_()
    return save_bundle(model, meta, path)


def boundary_error(mask, truth):
    """Mean distance (px) from the predicted class edge to the true edge."""
    edge = truth ^ ndimage.binary_erosion(truth)
    dist = ndimage.distance_transform_edt(~edge)
    pred_edge = mask ^ ndimage.binary_erosion(mask)
    return dist[pred_edge].mean()


def test_predict_refine_crf_snaps_edges_and_is_chunk_invariant(tmp_path):
    data, truth = blurred_discs()
    scene = write_scene(tmp_path / "s.tif", data, nodata=None)
    bundle = disc_bundle(tmp_path / "b")
    got = {}
    for name, extra in (("plain", ["--chunk-size", "1024"]),
                        ("crf", ["--refine", "crf", "--chunk-size", "1024", "--workers", "1"]),
                        ("crf-small", ["--refine", "crf", "--chunk-size", "512", "--workers", "2"]),
                        ("crf-probs", ["--refine", "crf", "--chunk-size", "2048", "--probabilities"])):
        r = CliRunner().invoke(cli, ["predict", str(bundle), str(scene), "-o", str(tmp_path / name), "--no-progress",
                                     "--engine", "torch", *extra])
        assert r.exit_code == 0, r.output
        with rasterio.open(tmp_path / name / "s.classes.tif") as src:
            got[name] = src.read(1)
        assert sorted(p.name for p in (tmp_path / name).iterdir() if ".crf" in p.name) == []  # no temporaries
    before, after = boundary_error(got["plain"] == 1, truth), boundary_error(got["crf"] == 1, truth)
    assert before > 4 and after < 1.5, (before, after)
    iou = lambda m: (m & truth).sum() / (m | truth).sum()  # noqa: E731
    assert iou(got["crf"] == 1) > 0.95 > iou(got["plain"] == 1)
    # the same windows and halos whatever the chunks and workers: bit-identical
    assert np.array_equal(got["crf"], got["crf-small"]) and np.array_equal(got["crf"], got["crf-probs"])
    with rasterio.open(tmp_path / "crf-probs" / "s.probs.tif") as src:
        assert src.count == 2  # --probabilities still writes the (unrefined) blended probabilities


def test_crf_settings_parse_and_refuse():
    s = CRFSettings.parse("bilateral_sxy=60, iterations=10", {"halo": 64})
    assert (s.bilateral_sxy, s.iterations, s.halo, s.gaussian_weight) == (60.0, 10, 64, 3.0)
    for bad, msg in (("sxy=3", "key=value pairs of"), ("iterations=two", "must be a number"),
                     ("iterations=0", "whole number >= 1"), ("bilateral_srgb=-1", ">= 0")):
        with pytest.raises(GeosegError, match=msg):
            CRFSettings.parse(bad)


@pytest.mark.parametrize("args, needles", [
    (["--crf", "iterations=3"], ["add --refine crf"]),
    (["--refine", "crf", "--crf", "colour=3"], ["--crf takes key=value pairs"]),
])
def test_bad_refine_options_are_one_line(tmp_path, args, needles):
    data, _ = blurred_discs(200, 200)
    scene = write_scene(tmp_path / "s.tif", data, nodata=None)
    bundle = disc_bundle(tmp_path / "b")
    r = CliRunner().invoke(cli, ["predict", str(bundle), str(scene), "-o", str(tmp_path / "out"), "--no-progress",
                                 *args])
    assert_one_line_error(r, *needles)
    assert not (tmp_path / "out").exists()
