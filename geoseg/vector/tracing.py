"""Label images to polygons: connected components and their boundary rings, built as arrays.

The kernels are compiled (``geoseg/vector/_trace_ext.pyx``) and run without the GIL;
this module turns their rings into shapely polygons in one vectorized call.
"""

from __future__ import annotations

import numpy as np
import shapely
from geoseg.vector._trace_ext import label_values as _label_values
from geoseg.vector._trace_ext import trace_rings


def label_values(codes: np.ndarray, skip: np.ndarray, diagonal: bool):
    """Connected components of equal codes; codes flagged in ``skip`` are not labelled.

    ``codes`` is a 2-D uint8, uint16 or int64 array, ``skip`` a boolean array
    indexed by code. Returns the int32 label image (1..n in raster order, 0 for
    skipped pixels), the code of each label and its pixel count (index 0: skipped).
    """
    return _label_values(np.ascontiguousarray(codes), np.ascontiguousarray(skip, dtype=bool).view(np.uint8),
                         bool(diagonal))


def polygons(labels: np.ndarray, x_off: int = 0, y_off: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One polygon per label of a 4-connected label image, in pixel coordinates offset by (x_off, y_off).

    Returns the labels (ascending) and their polygons.
    """
    xs, ys, offsets, ring_label = trace_rings(np.ascontiguousarray(labels, dtype=np.int32))
    if len(ring_label) == 0:
        return np.zeros(0, dtype=np.int32), np.zeros(0, dtype=object)
    starts, sizes = offsets[:-1], np.diff(offsets)
    # shoelace, twice the signed area per ring: > 0 for exteriors, < 0 for holes
    x, y = xs.astype(np.int64), ys.astype(np.int64)
    cross = x[:-1] * y[1:] - x[1:] * y[:-1]
    cross = np.append(cross, 0)
    twice = np.add.reduceat(cross, starts) - cross[offsets[1:] - 1]
    order = np.lexsort((twice < 0, ring_label))  # per label: its exterior, then its holes
    sizes = sizes[order]
    idx = np.repeat(starts[order] - np.cumsum(sizes) + sizes, sizes) + np.arange(sizes.sum())
    coords = np.column_stack([xs[idx] + float(x_off), ys[idx] + float(y_off)])
    ring_offsets = np.concatenate([[0], np.cumsum(sizes)])
    lab_sorted = ring_label[order]
    new_poly = np.ones(len(order), dtype=bool)
    new_poly[1:] = lab_sorted[1:] != lab_sorted[:-1]
    poly_offsets = np.append(np.nonzero(new_poly)[0], len(order))
    geoms = shapely.from_ragged_array(shapely.GeometryType.POLYGON, coords, (ring_offsets, poly_offsets))
    return lab_sorted[new_poly], geoms
