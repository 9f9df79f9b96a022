"""Boundary-aware object targets: body, inner border and contact channels from an instance raster.

The SpaceNet building winners after round 1 (cannab and selim_sef in round 4, zbigniewwojna in
round 6; solaris' ``df_to_px_mask(channels=['footprint', 'boundary', 'contact'])``) train three
channels per object class and split touching objects with a seeded watershed over them. Here the
channels are made from an instance raster (each polygon burnt with its own number,
:func:`geoseg.vector.labels.read_instances`), so touching footprints, which a class mask cannot
tell apart, get a contact strip between them:

- **body**: every pixel of an object;
- **border**: object pixels less than ``border`` px (Euclidean) from the object's own edge, an edge
  pixel being an object pixel with a 4-neighbour of another value (background or another object);
  the chip's own edge is not an object edge (the object goes on past it);
- **contact**: pixels (object or background) within ``contact`` px (Euclidean, inclusive) of two
  different objects: the strip where neighbours meet or nearly meet.

Seeds for decoding are then body minus border minus contact (see ``geoseg.inference.objects``).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

CHANNELS = ("body", "border", "contact")


def disk(radius: int) -> np.ndarray:
    """The pixels within ``radius`` (Euclidean, inclusive) of the centre."""
    r = int(radius)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return yy * yy + xx * xx <= r * r


def object_targets(instances: np.ndarray, border: int = 2, contact: int = 3) -> np.ndarray:
    """``(3, H, W)`` uint8 targets (body, border, contact) of an instance raster (0: no object)."""
    inst = np.asarray(instances)
    if inst.ndim != 2:
        raise ValueError(f"an instance raster is 2-D, got shape {inst.shape}")
    inst = inst.astype(np.int64, copy=False)
    body = inst > 0
    out = np.zeros((3,) + inst.shape, dtype=np.uint8)
    out[0] = body
    if not body.any():
        return out
    if border > 0:
        padded = np.pad(inst, 1, mode="edge")  # past the chip's edge the object goes on
        centre = padded[1:-1, 1:-1]
        edge = body & ((padded[:-2, 1:-1] != centre) | (padded[2:, 1:-1] != centre)
                       | (padded[1:-1, :-2] != centre) | (padded[1:-1, 2:] != centre))
        if edge.any():
            out[1] = body & (ndimage.distance_transform_edt(~edge) < border)
    if contact > 0:
        foot = disk(contact)
        big = int(inst.max()) + 1  # above every id (scipy takes cval as a float: no int64 extremes)
        hi = ndimage.maximum_filter(inst, footprint=foot, mode="constant", cval=0)
        lo = ndimage.minimum_filter(np.where(body, inst, big), footprint=foot, mode="constant", cval=big)
        out[2] = (hi > 0) & (lo != big) & (hi != lo)
    return out


__all__ = ["CHANNELS", "disk", "object_targets"]
