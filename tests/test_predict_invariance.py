"""Prediction is independent of chunking, workers and scheduler, and equals a plain blend."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch

from geoseg.models.bundle import load_bundle
from geoseg.prediction import PredictOptions, predict
from tests.conftest import known_class


def run(bundle, scene, out, client=None, **kw) -> np.ndarray:
    opts = PredictOptions(progress=False, overwrite=True, **kw)
    (res,) = predict(bundle, [str(scene)], out, opts, client=client)
    with rasterio.open(res.classes) as src:
        return src.read(1)


@pytest.fixture(scope="module")
def cluster_client():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cl, \
            Client(cl) as client:
        yield client


def reference_blend(bundle_path, data: np.ndarray, tile: int, overlap: int, margins: bool = False):
    """The whole scene in memory: every tile of the grid, raised-cosine weights, float64 mean, argmax.

    The model runs in channels_last, as in geoseg, so only the blending differs.
    With ``margins``, also returns each pixel's lead of the best over the second-best probability.
    """
    b = load_bundle(bundle_path)
    b.model.to(memory_format=torch.channels_last)
    m = b.meta
    c, h, w = data.shape
    stride = tile - overlap
    starts_y = list(range(0, max(h - tile, 0) + stride, stride))[: 1 + max(0, -(-(h - tile) // stride))]
    starts_x = list(range(0, max(w - tile, 0) + stride, stride))[: 1 + max(0, -(-(w - tile) // stride))]
    valid = (data != 0).any(axis=0)
    x = (data.astype(np.float32) - np.float32(m.mean[0])) / np.float32(m.std[0])
    x[:, ~valid] = 0
    num = np.zeros((m.num_classes, h + tile, w + tile))
    den = np.zeros((h + tile, w + tile))
    ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(overlap) + 0.5) / overlap)

    def win(first, last):
        v = np.ones(tile)
        if not first:
            v[:overlap] = ramp
        if not last:
            v[-overlap:] = ramp[::-1]
        return v

    for iy, y in enumerate(starts_y):
        for ix, x0 in enumerate(starts_x):
            part = x[:, y : y + tile, x0 : x0 + tile]
            if not valid[y : y + tile, x0 : x0 + tile].any():
                continue
            ph, pw = part.shape[1:]
            part = np.pad(part, [(0, 0), (0, tile - ph), (0, tile - pw)], mode="reflect")
            with torch.no_grad():
                xt = torch.from_numpy(part[None]).contiguous(memory_format=torch.channels_last)
                p = torch.softmax(b.model(xt), 1)[0].double().numpy()
            wt = np.outer(win(iy == 0, iy == len(starts_y) - 1), win(ix == 0, ix == len(starts_x) - 1))
            num[:, y : y + tile, x0 : x0 + tile] += p * wt
            den[y : y + tile, x0 : x0 + tile] += wt
    prob = num[:, :h, :w] / np.maximum(den[:h, :w], 1e-300)
    cls = np.argmax(prob, axis=0).astype(np.uint8)
    cls[~valid] = 255
    if margins:
        top2 = np.sort(prob, axis=0)[-2:]
        return cls, top2[1] - top2[0]
    return cls


def test_output_is_bit_identical_across_chunks_workers_and_schedulers(linear_bundle, seam_scene, tmp_path,
                                                                      cluster_client):
    scene, data = seam_scene
    results = {}
    for chunk in (256, 512, 2048):
        for workers in (1, 2):
            results[("threads", chunk, workers)] = run(linear_bundle, scene, tmp_path / f"t{chunk}{workers}",
                                                       chunk_size=chunk, workers=workers)
        results[("cluster", chunk, 2)] = run(linear_bundle, scene, tmp_path / f"c{chunk}",
                                             client=cluster_client, chunk_size=chunk)
    first = next(iter(results.values()))
    for key, arr in results.items():
        np.testing.assert_array_equal(arr, first, err_msg=str(key))

    ref = reference_blend(linear_bundle, data, 128, 32)
    np.testing.assert_array_equal(first, ref)


def test_every_pixel_is_the_known_function_of_its_values(linear_bundle, seam_scene, tmp_path):
    scene, data = seam_scene
    for blend in ("cosine", "average", "crop"):
        out = run(linear_bundle, scene, tmp_path / blend, chunk_size=300, blend=blend)
        expected = known_class(data)
        expected[(data == 0).all(axis=0)] = 255
        np.testing.assert_array_equal(out, expected, err_msg=blend)
        # the nodata hole, the all-nodata corner, and partly-nodata pixels
        assert (out[100:140, 200:260] == 255).all() and (out[600:, :150] == 255).all()
        assert (out[300:310, 400:420] != 255).all()


def test_real_cnn_is_bit_identical_across_chunk_sizes(unet_bundle, seam_scene, tmp_path):
    """A U-Net's tiles see their surroundings, so blending really mixes different votes."""
    scene, data = seam_scene
    small = data[:, :300, :420].copy()
    from tests.conftest import write_scene

    path = write_scene(tmp_path / "small.tif", small)
    outs = [run(unet_bundle, path, tmp_path / f"u{c}", chunk_size=c, batch_size=b)
            for c, b in ((48, 1), (100, 3), (2048, 4))]
    for o in outs[1:]:
        np.testing.assert_array_equal(o, outs[0])
    assert len(np.unique(outs[0][outs[0] != 255])) > 1  # not a constant map
    # Against the float64 in-memory blend: equal wherever the reference is not within
    # 1e-6 of a tie (geoseg's fixed-point votes resolve 6e-8).
    ref, margin = reference_blend(unet_bundle, small, 64, 16, margins=True)
    clear = margin > 1e-6
    assert clear.mean() > 0.999
    np.testing.assert_array_equal(outs[0][clear], ref[clear])


def test_probabilities_are_the_blended_softmax(linear_bundle, seam_scene, tmp_path):
    scene, data = seam_scene
    opts = PredictOptions(progress=False, probabilities=True, chunk_size=256)
    (res,) = predict(linear_bundle, [str(scene)], tmp_path, opts)
    with rasterio.open(res.probabilities) as src:
        probs = src.read()
        assert src.count == 3 and src.descriptions == ("p(background)", "p(building)", "p(water)")
    m = data.astype(np.float64).mean(axis=0)
    logits = np.stack([np.zeros_like(m), m - 85.5, 2 * m - 256.0])
    p = np.exp(logits - logits.max(0))
    p /= p.sum(0)
    valid = (data != 0).any(axis=0)
    # the linear model gives every tile the same vote, so the blend is the softmax itself
    diff = np.abs(probs.astype(int) - np.rint(p * 255).astype(int))[:, valid]
    assert diff.max() <= 1
    assert (probs[:, ~valid] == 0).all()


def test_cli_scheduler_address_uses_the_existing_cluster(linear_bundle, seam_scene, tmp_path, cluster_client):
    from click.testing import CliRunner

    from geoseg.cli.main import cli

    scene, _ = seam_scene
    address = cluster_client.scheduler.address
    assert address.startswith("tcp://")
    r = CliRunner().invoke(cli, ["predict", str(linear_bundle), str(scene), "-o", str(tmp_path / "addr"),
                                 "--scheduler", address, "--chunk-size", "256", "--no-progress"])
    assert r.exit_code == 0, r.output
    with rasterio.open(tmp_path / "addr" / "seam.classes.tif") as src:
        via_cluster = src.read(1)
    np.testing.assert_array_equal(via_cluster, run(linear_bundle, scene, tmp_path / "local", chunk_size=2048))
    # the cluster's workers ran the blocks: their task log names geoseg's block tasks
    logs = cluster_client.run(lambda dask_worker: [t for t in dask_worker.state.log
                                                   if "block-" in str(t)][:1])
    assert any(logs.values())
