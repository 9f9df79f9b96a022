"""Boundary-aware objects: decoding body, border and contact channels into one object per footprint."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from geoseg.errors import GeosegError
from geoseg.inference.objects import DecodeSettings, decode_objects
from geoseg.training.targets import object_targets


def _touching_rectangles(seed=0):
    """A 160x200 scene of rectangles in rows, each row's rectangles sharing their long edges."""
    rng = np.random.default_rng(seed)
    inst = np.zeros((160, 200), np.int32)
    n = 0
    for r0 in (6, 58, 110):
        c = 5
        while c < 170:
            w = int(rng.integers(12, 26))
            n += 1
            inst[r0 : r0 + int(rng.integers(24, 40)), c : c + w] = n
            c += w  # the next one shares this one's edge
    return inst, n


def _iou(a, b):
    return (a & b).sum() / (a | b).sum()


def test_touching_rectangles_decode_to_one_object_each():
    inst, n = _touching_rectangles()
    chans = object_targets(inst, border=2, contact=3).astype(np.float32)
    # as a model would give them: soft, and a little noisy
    rng = np.random.default_rng(1)
    probs = np.clip(np.stack([ndimage.gaussian_filter(c, 0.7) for c in chans])
                    + rng.normal(0, 0.03, chans.shape), 0, 1)
    labels = decode_objects(*probs)
    assert labels.max() == n
    # the class mask alone cannot tell them apart: one component per row of rectangles
    assert ndimage.label(inst > 0)[1] == 3
    for k in range(1, n + 1):
        ref = inst == k
        best = np.bincount(labels[ref], minlength=n + 1)[1:].argmax() + 1
        assert _iou(labels == best, ref) >= 0.9, k
    assert len(np.unique(labels)) == n + 1


def test_small_objects_and_seedless_parts():
    body = np.zeros((40, 40), np.float32)
    body[2:12, 2:12] = 0.9  # a clear object
    body[20:23, 20:23] = 0.9  # 9 px: under min_area
    zero = np.zeros_like(body)
    labels = decode_objects(body, zero, zero, DecodeSettings(min_area=10))
    assert labels.max() == 1 and (labels == 1).sum() == 100 and not labels[20:23, 20:23].any()
    # a part whose pixels are all border (no seed) still comes back as its own object
    border = np.zeros_like(body)
    border[2:12, 2:12] = 0.9
    labels = decode_objects(body, border, zero, DecodeSettings(min_area=10))
    assert labels.max() == 1 and (labels == 1).sum() == 100
    assert not decode_objects(zero, zero, zero).any()


@pytest.mark.parametrize("bad", [dict(seed=1.5), dict(mask=-0.1), dict(min_area=-1)])
def test_bad_settings(bad):
    with pytest.raises(GeosegError, match="object decoding"):
        DecodeSettings(**bad)
