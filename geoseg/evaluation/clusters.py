"""Scoring an unsupervised clustering against reference classes: the best one-to-one matching.

Cluster numbers carry no class meaning, so ``evaluate --match-clusters`` first counts, per
scene, the pixels of every (reference class, cluster) pair, then matches clusters to classes
one to one so that the matched pixels are as many as possible (the Hungarian method,
``scipy.optimize.linear_sum_assignment``, the usual "Hungarian accuracy" of unsupervised
segmentation). The scene is then scored as any class raster, with each matched cluster read
as its class. Clusters left without a class (``k`` above the number of classes) are
"unmatched clusters": their pixels are errors (misses of the reference class they cover),
and they get no score of their own. The matching is per scene (each scene's clustering
may number its clusters differently) and is written into the report, so the figures say
what they are: an upper bound of what a labelled mapping of these clusters could score.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from rasterio.windows import Window

from geoseg.classes import NODATA, ClassList, SegClass
from geoseg.errors import GeosegError

UNMATCHED = "unmatched clusters"


def match_clusters(counts: np.ndarray, class_ids: list[int], cluster_ids: list[int]) -> dict[int, int]:
    """``{cluster id: class id}`` maximising matched pixels; ``counts[reference class, cluster]``."""
    from scipy.optimize import linear_sum_assignment

    sub = np.asarray(counts, dtype=np.float64)[np.ix_(class_ids, cluster_ids)]
    rows, cols = linear_sum_assignment(sub, maximize=True)
    return {int(cluster_ids[j]): int(class_ids[i]) for i, j in zip(rows, cols)}


@dataclass(frozen=True)
class RelabelledLabels:
    """A label source whose ids are read through a lookup table (nodata stays nodata)."""

    source: object
    lut: np.ndarray  # (256,) int32

    def read(self, grid, win: Window) -> np.ndarray:
        arr = self.source.read(grid, win)
        out = self.lut[np.clip(arr, 0, 255)]
        out[(arr < 0) | (arr > 255)] = NODATA
        return out


def counting_classes(reference: ClassList, cluster_ids: list[int]) -> ClassList:
    """The reference classes, plus a placeholder for every cluster id they do not use, so that one
    confusion matrix holds every (class, cluster) pair."""
    used = {c.id for c in reference}
    extra = [SegClass(i, f"cluster id {i}", "#808080", vectorize=False) for i in cluster_ids if i not in used]
    return ClassList(tuple(reference) + tuple(extra))


def scoring_classes(reference: ClassList) -> tuple[ClassList, int]:
    """The reference classes and an "unmatched clusters" id after them."""
    u = max(c.id for c in reference) + 1
    if u >= NODATA:
        raise GeosegError("--match-clusters needs a class id free after the reference classes (ids up to 253)")
    return ClassList(tuple(reference) + (SegClass(u, UNMATCHED, "#808080", vectorize=False),)), u


def lookup(mapping: dict[int, int], unmatched: int) -> np.ndarray:
    lut = np.full(256, unmatched, dtype=np.int32)
    lut[NODATA] = NODATA
    for cluster, cls in mapping.items():
        lut[cluster] = cls
    return lut
