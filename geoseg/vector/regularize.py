"""Regularized footprints: building outlines with right-angled (and 45°) edges, aligned with neighbours.

The work is done by ``buildingregulariser`` (MIT; the package geoai uses). geoseg wraps it for what
it does not handle on its own, measured on the Rio demo's 159 predicted buildings
(buildingregulariser 0.2.5):

- **Geographic CRSs.** Its tolerances are in CRS units, so on a scene in EPSG:4326 its default
  simplification tolerance (meant as metres) is read as degrees and every polygon comes back empty. Footprints are
  regularized in the scene's UTM zone (``estimate_utm_crs``) and brought back.
- **One row per object.** It splits a MultiPolygon into its parts (159 rows came back as 161).
  Each object's parts are regularized together and joined again, so the layer keeps its rows.
- **No spurious chamfers.** With its default diagonal threshold, noisy pixel rectangles got 45°
  corners cut into them; geoseg asks for edges much nearer the diagonal before it turns one 45°.
- **Whatever fails is kept as it was.** A part that comes back empty or invalid after
  ``make_valid`` keeps its original outline. The count is logged.

Regularization needs the whole layer at once (neighbours are aligned with each other), so
``vectorize --regularize`` holds the features of its object classes until the end, as
``--simplify`` does.
"""

from __future__ import annotations

import logging

import numpy as np
import shapely

log = logging.getLogger("geoseg")
# in metres: merge nearly parallel edges closer than this; simplify away wiggles smaller than this
PARALLEL_M = 1.0
SIMPLIFY_M = 0.75  # 0.5 left 1-px notches of noisy 0.5 m pixel outlines; 1.0 moved some areas by 10%
# degrees: an edge turns 45° only when it is this much closer to the diagonal than buildingregulariser's
# default (15) asks; at 15, noisy pixel rectangles get spurious 45° chamfers (3 of 18 in tests/test_vectorize.py)
DIAGONAL_REDUCTION = 30


def regularize_footprints(geoms: np.ndarray, crs) -> np.ndarray:
    """Regularized copies of polygon geometries in ``crs`` (same length and order)."""
    import warnings

    import geopandas as gpd
    from buildingregulariser import regularize_geodataframe

    geoms = np.asarray(geoms, dtype=object)
    if not len(geoms):
        return geoms
    frame = gpd.GeoDataFrame({"row": np.arange(len(geoms))}, geometry=list(geoms), crs=crs)
    unit = 1.0
    if crs is not None and frame.crs.is_geographic:
        frame = frame.to_crs(frame.estimate_utm_crs())
    elif crs is not None and frame.crs.axis_info:
        unit = float(frame.crs.axis_info[0].unit_conversion_factor) or 1.0  # metres per CRS unit
    parts = frame.explode(index_parts=False).reset_index(drop=True)
    with warnings.catch_warnings():  # its own chatter (shapely and pandas warnings) is not the user's
        warnings.simplefilter("ignore")
        done = regularize_geodataframe(parts, parallel_threshold=PARALLEL_M / unit, simplify=True,
                                       simplify_tolerance=SIMPLIFY_M / unit, allow_45_degree=True,
                                       diagonal_threshold_reduction=DIAGONAL_REDUCTION, allow_circles=True,
                                       neighbor_alignment=True, num_cores=1)
    out = list(frame.geometry)
    regular = done.geometry.to_numpy()
    ok = ~shapely.is_empty(regular) & ~shapely.is_missing(regular)
    bad = ok & ~shapely.is_valid(regular)
    regular[bad] = shapely.make_valid(regular[bad])
    keep = ok & np.isin(shapely.get_type_id(regular), (3, 6))  # Polygon, MultiPolygon
    failed = 0
    by_row: dict[int, list] = {}
    for row, g, good, orig in zip(done["row"].to_numpy(), regular, keep, parts.geometry.to_numpy()):
        by_row.setdefault(int(row), []).append(g if good else orig)
        failed += not good
    for row, gs in by_row.items():
        out[row] = gs[0] if len(gs) == 1 else shapely.union_all(gs)
    if failed:
        log.info("regularize: %d of %d parts kept their original outline (empty or invalid after regularizing)",
                 failed, len(parts))
    result = gpd.GeoSeries(out, crs=frame.crs)
    if crs is not None:
        result = result.to_crs(crs)
    return np.asarray(result.to_numpy(), dtype=object)


def right_angle_error(polygon: shapely.Polygon) -> float:
    """The largest deviation, in degrees, of the exterior's corners from the nearest multiple of 90°."""
    xy = np.asarray(polygon.exterior.coords)[:-1]
    a, b = xy - np.roll(xy, 1, axis=0), np.roll(xy, -1, axis=0) - xy
    ang = np.degrees(np.arctan2(a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0], (a * b).sum(axis=1)))
    return float(np.max(np.abs((ang + 45) % 90 - 45))) if len(ang) else 0.0


__all__ = ["regularize_footprints", "right_angle_error"]
