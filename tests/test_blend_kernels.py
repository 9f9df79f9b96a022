"""The compiled per-tile kernels of prediction against NumPy references of the same arithmetic."""

from __future__ import annotations

import numpy as np
import pytest
from geoseg.inference._blend_ext import argmax_votes, fold_tile, normalize

from geoseg.inference.blending import scaled_tile_weights


@pytest.mark.parametrize("dtype", ["u1", "i1", "u2", "i2", "u4", "i4", "i8", "f4", "f8"])
def test_normalize_equals_numpy_in_float32(dtype):
    rng = np.random.default_rng(1)
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    lo, hi = (info.min, info.max) if info else (-1e4, 1e4)
    data = rng.uniform(max(lo, -1e6), min(hi, 1e6), (3, 90, 120)).astype(dtype)
    valid = rng.random((90, 120)) > 0.3
    mean = np.array([1.5, -3.25, 100.0], np.float32)
    scale = np.float32(1.0) / np.array([3.0, 7.0, 0.1], np.float32)
    out = np.full((64, 64, 3), -7.0, np.float32)
    normalize(data, valid.view(np.uint8), mean, scale, out, 10, 20, 60, 50)

    ref = np.empty((3, 60, 50), np.float32)
    np.subtract(data[:, 10:70, 20:70], mean[:, None, None], out=ref, dtype=np.float32)
    ref *= scale[:, None, None]
    ref[:, ~valid[10:70, 20:70]] = 0
    np.testing.assert_array_equal(out[:60, :50], ref.transpose(1, 2, 0))  # channels last
    assert (out[60:] == -7).all() and (out[:, 50:] == -7).all()  # nothing outside the window
    with pytest.raises(ValueError):
        normalize(data, valid.view(np.uint8), mean, scale, out, 40, 20, 60, 50)  # past the data's edge


def softmax_votes(logits: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Float64 ``softmax * w`` for logits ``(..., K)`` (the kernel works in float32: +-1 quantum)."""
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True) * w[..., None]


def fold_dense(logits, w, y, x, h, wd, ey0, ey1, ex0, ex1, classes, nacc, probs=None, preset=0):
    """Run ``fold_tile`` with the vertical bands at the tile's side overlaps; return the votes as one dense array."""
    bh, bw = classes.shape
    slot = np.full(bw, -1, np.intp)
    sides = [(x, x + ex0)] if ex0 > 0 else []
    sides += [(x + ex1, x + wd)] if ex1 < wd else []
    for a, b in sides:
        slot[a:b] = np.arange(b - a) + slot.max() + 1
    rows = np.full((nacc, bh, bw), preset, np.int32)  # votes already there (another tile's) are added to
    cols = np.full((nacc, bh, slot.max() + 1), preset, np.int32)
    fold_tile(logits, w, y, x, h, wd, ey0, ey1, ex0, ex1, classes, rows, cols, slot, probs)
    dense = rows.copy()
    mid = np.arange(bh)
    mid = mid[(mid >= y + ey0) & (mid < y + ey1)]
    for a, b in sides:
        dense[:, mid[:, None], np.arange(a, b)] = cols[:, mid[:, None], slot[a:b]]
    return dense


@pytest.mark.parametrize("k", [2, 4, 7])
@pytest.mark.parametrize("with_probs", [False, True])
@pytest.mark.parametrize("clipped", [False, True])
def test_fold_tile_takes_argmax_inside_and_adds_votes_in_the_overlaps(k, with_probs, clipped):
    rng = np.random.default_rng(k)
    t, ov = 64, 8
    logits = rng.normal(0, 3, (t, t, k)).astype(np.float32)
    logits[20, 40, :] = logits[20, 40, 1]  # ties: the first index wins
    logits[30, 30, 1:] = logits[30, 30].max()
    if clipped:  # the scene's last column of tiles, cut at the scene's edge: no ramp, no right overlap
        w = scaled_tile_weights("cosine", t, ov, False, False, False, True)
        bh, bw, y, x, h, wd = 100, 85, 20, 30, 64, 55
        ey0, ey1, ex0, ex1 = ov, t - ov, ov, wd
    else:
        w = scaled_tile_weights("cosine", t, ov, False, False, False, False)
        bh, bw, y, x, h, wd = 100, 110, 20, 30, 64, 64
        ey0, ey1, ex0, ex1 = ov, t - ov, ov, t - ov
    classes = np.full((bh, bw), 255, np.uint8)
    nacc = k + 1 if with_probs else k
    probs = np.zeros((k, bh, bw), np.uint8) if with_probs else None
    acc = fold_dense(logits, w, y, x, h, wd, ey0, ey1, ex0, ex1, classes, nacc, probs, preset=5)

    inside = np.zeros((h, wd), bool)
    inside[ey0:ey1, ex0:ex1] = True
    cls = classes[y : y + h, x : x + wd]
    np.testing.assert_array_equal(cls[inside], np.argmax(logits[:h, :wd], -1)[inside])
    assert cls[20, 40] == 0 and cls[30, 30] == (0 if logits[30, 30, 0] == logits[30, 30, 1] else 1)
    assert (cls[~inside] == 255).all() and (classes[:y] == 255).all() and (classes[:, x + wd :] == 255).all()

    ref = softmax_votes(logits[:h, :wd].astype(np.float64), w[:h, :wd].astype(np.float64))
    got = acc[:k, y : y + h, x : x + wd].transpose(1, 2, 0) - 5
    # float32 softmax, rounded: within a few float32 ulps of the scaled vote
    tol = 1 + 4 * np.finfo(np.float32).eps * w[:h, :wd, None]
    assert (np.abs(got - ref) <= tol)[~inside].all()
    assert (got[inside] == 0).all()
    assert got[~inside].sum(-1).min() > 0
    outside = np.ones((bh, bw), bool)
    outside[y : y + h, x : x + wd] = False
    assert (acc[:, outside] == 5).all()  # nothing written outside the tile
    if with_probs:
        np.testing.assert_array_equal(acc[k, y : y + h, x : x + wd][~inside] - 5, np.rint(w[:h, :wd][~inside]))
        p = probs[:, y : y + h, x : x + wd].transpose(1, 2, 0)
        expect = np.rint(ref * (255.0 / np.rint(w[:h, :wd, None])))
        assert np.abs(p[inside].astype(int) - expect[inside]).max() <= 1
        assert (p[~inside] == 0).all()


def test_fold_tile_refuses_side_overlaps_outside_the_vertical_bands():
    logits = np.zeros((16, 16, 2), np.float32)
    w = np.ones((16, 16), np.float32)
    classes = np.zeros((20, 20), np.uint8)
    rows, cols = np.zeros((2, 20, 20), np.int32), np.zeros((2, 20, 4), np.int32)
    slot = np.full(20, -1, np.intp)
    slot[:4] = np.arange(4)
    with pytest.raises(ValueError, match="right overlap"):
        fold_tile(logits, w, 0, 0, 16, 16, 4, 12, 4, 12, classes, rows, cols, slot)
    with pytest.raises(ValueError, match="left overlap"):
        fold_tile(logits, w, 0, 2, 16, 16, 4, 12, 4, 16, classes, rows, cols, slot)


def test_fold_tile_argmax_ties_and_nan_follow_torch():
    import torch

    logits = np.zeros((4, 4, 3), np.float32)
    logits[0, 0] = [1, 1, 0]
    logits[0, 1] = [0, 2, 2]
    logits[0, 2] = [0, np.nan, 5]
    logits[0, 3] = [np.nan, np.nan, 1]
    logits[1, 0] = [-np.inf, -1, -np.inf]
    classes = np.zeros((4, 4), np.uint8)
    w = np.ones((4, 4), np.float32)
    fold_tile(logits, w, 0, 0, 4, 4, 0, 4, 0, 4, classes, np.zeros((3, 4, 4), np.int32), np.zeros((3, 4, 0), np.int32),
              np.full(4, -1, np.intp))
    np.testing.assert_array_equal(classes, torch.from_numpy(logits).argmax(-1).numpy())
    assert classes[0].tolist() == [0, 1, 1, 0] and classes[1, 0] == 1


def test_argmax_votes_equals_numpy():
    rng = np.random.default_rng(3)
    acc = rng.integers(0, 4, (5, 40, 50)).astype(np.int32)  # many ties
    classes = np.full((40, 50), 255, np.uint8)
    argmax_votes(acc, 4, 3, 30, 5, 45, classes)  # the fifth plane (weights) is not a class
    np.testing.assert_array_equal(classes[3:30, 5:45], np.argmax(acc[:4, 3:30, 5:45], 0))
    classes[3:30, 5:45] = 255
    assert (classes == 255).all()
    argmax_votes(acc, 4, 3, 30, 0, 10, classes, 20)  # written 20 columns to the right
    np.testing.assert_array_equal(classes[3:30, 20:30], np.argmax(acc[:4, 3:30, 0:10], 0))
    with pytest.raises(ValueError):
        argmax_votes(acc, 4, 3, 30, 0, 10, classes, 45)
