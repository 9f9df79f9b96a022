"""Objects from boundary-aware channels: a seeded watershed over body, inner border and contact.

The channels are those of :mod:`geoseg.training.targets` (probabilities in [0, 1]). Seeds are the
pixels that are surely inside one object, ``body * (1 - border) * (1 - contact) > seed``, split
into 4-connected components; seeds smaller than ``min_seed`` px are dropped. A watershed
(``skimage.segmentation.watershed``) floods from the seeds over the object mask
(``body > mask``), lowest ``1 - score`` first, so touching objects meet inside the contact strip.
Parts of the mask no seed reaches become objects of their own when large enough; objects smaller
than ``min_area`` px are dropped. This is how the SpaceNet winners after round 1 (cannab,
selim_sef, zbigniewwojna) decoded their three-channel heatmaps; the thresholds belong to a model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from geoseg.errors import GeosegError


@dataclass(frozen=True)
class DecodeSettings:
    """A model's decoding thresholds (stored in its bundle and tuned by training)."""

    seed: float = 0.6  # seed score above which a pixel is surely inside one object
    mask: float = 0.5  # body probability above which a pixel is inside some object
    min_seed: int = 4  # px: smaller seeds are noise
    min_area: int = 16  # px: smaller objects are dropped

    def __post_init__(self) -> None:
        for name in ("seed", "mask"):
            v = getattr(self, name)
            if not 0 <= v <= 1:
                raise GeosegError(f"object decoding: {name} must be in [0, 1], got {v}")
        for name in ("min_seed", "min_area"):
            if getattr(self, name) < 0:
                raise GeosegError(f"object decoding: {name} must be 0 or more px, got {getattr(self, name)}")

    def to_dict(self) -> dict:
        return asdict(self)


_FOUR = ndimage.generate_binary_structure(2, 1)


def decode_objects(body: np.ndarray, border: np.ndarray, contact: np.ndarray,
                   settings: DecodeSettings = DecodeSettings()) -> np.ndarray:
    """int32 object labels (1.., 0: none) of one tile's channel probabilities, each ``(H, W)``."""
    from skimage.segmentation import watershed

    body, border, contact = (np.asarray(a, dtype=np.float32) for a in (body, border, contact))
    if not body.shape == border.shape == contact.shape or body.ndim != 2:
        raise ValueError(f"channels must be three 2-D arrays of one shape, got {body.shape}, {border.shape}, "
                         f"{contact.shape}")
    mask = body > settings.mask
    labels = np.zeros(body.shape, dtype=np.int32)
    if not mask.any():
        return labels
    score = body * (1 - border) * (1 - contact)
    seeds, n = ndimage.label(mask & (score > settings.seed), structure=_FOUR)
    if n:
        sizes = np.bincount(seeds.ravel(), minlength=n + 1)
        seeds[sizes[seeds] < settings.min_seed] = 0
    if seeds.any():
        labels = watershed(1 - score, markers=seeds, mask=mask, connectivity=1).astype(np.int32, copy=False)
    # parts of the mask no seed reached: objects of their own
    rest, m = ndimage.label(mask & (labels == 0), structure=_FOUR)
    if m:
        top = int(labels.max())
        labels[rest > 0] = rest[rest > 0] + top
    sizes = np.bincount(labels.ravel())
    keep = sizes >= max(settings.min_area, 1)
    keep[0] = False
    lut = np.zeros(len(sizes), dtype=np.int32)
    lut[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)  # 1.. in order of first seed
    return lut[labels]


def label_pieces(grid, row: int, col: int, labels: np.ndarray, label: int, score: np.ndarray | None = None) -> list:
    """The objects of one tile's label image (``(h, w)``, 0: none) that the tile owns, as pieces
    (:func:`geoseg.inference.pieces.tile_piece`): ``score`` is the mean of ``score`` over each object
    (1 without one)."""
    from geoseg.inference.pieces import tile_piece

    out = []
    for n, sl in enumerate(ndimage.find_objects(labels), 1):
        if sl is None:
            continue
        m = labels[sl] == n
        s = float(score[sl][m].mean()) if score is not None else 1.0
        p = tile_piece(grid, row, col, sl[0].start, sl[1].start, m, label, s)
        if p is not None:
            out.append(p)
    return out


def tile_objects(grid, row: int, col: int, logits: np.ndarray, valid: np.ndarray, classes: tuple[int, ...],
                 settings: DecodeSettings) -> list:
    """The objects one tile owns, from its object-channel logits ``(h, w, 3 * len(classes))`` (the part of
    the tile inside the scene): each class's channels decoded (:func:`decode_objects`) over the valid
    pixels; each object's score is its mean body probability."""
    out = []
    probs = 1 / (1 + np.exp(-np.asarray(logits, dtype=np.float32)))
    probs[~valid] = 0
    for ci, label in enumerate(classes):
        body, border, contact = (probs[..., 3 * ci + c] for c in range(3))
        out += label_pieces(grid, row, col, decode_objects(body, border, contact, settings), label, body)
    return out


__all__ = ["DecodeSettings", "decode_objects", "label_pieces", "tile_objects"]
