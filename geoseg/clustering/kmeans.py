"""k-means on pixel spectra: the classic unsupervised land-cover baseline, for scenes larger than memory.

The model is fitted with scikit-learn's ``KMeans`` on a **deterministic sample** of a
scene's valid pixels, then applied chunk by chunk:

- **Sample.** The scene is cut into the fixed 512 px blocks of geoseg's output grid
  (never the chunk size). Each block draws its share of the sample (in proportion to
  its area) at positions from a generator seeded with ``(seed, row, column)``, and
  keeps the valid ones (nodata and masked pixels are never drawn into the fit). The
  sample is the same for any chunk size, worker count or scheduler.
- **Fit.** Bands are standardised by the sample's mean and standard deviation (so a
  band in reflectance and one in digital numbers weigh alike), then
  ``KMeans(n_clusters=k, n_init=4, random_state=seed)``.
- **Order.** Clusters are numbered 0..k-1 by the mean brightness of their centres
  (the mean over bands, in the scene's units; ties by the centre's values), so a
  repeated run, another seed that finds the same partition, or a neighbouring scene
  clustered with the same model, number the same cover alike.
- **Assign.** Each pixel goes to its nearest centre, computed per pixel in float32 in a
  fixed order of operations: the class raster is bit-identical for any chunk size.
"""

from __future__ import annotations

import json
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rasterio.windows import Window

from geoseg.classes import NODATA, ClassList, SegClass
from geoseg.errors import GeosegError
from geoseg.io.raster import SceneInfo, read_window

SAMPLE_BLOCK = 512  # the sampling grid: geoseg's output block, whatever the chunk size
MAX_CLUSTERS = 254  # ids 0..253; 255 is nodata


@dataclass(frozen=True)
class Standardisation:
    """Per-band mean and standard deviation of a sample (a constant band divides by 1, not 0)."""

    mean: np.ndarray  # (bands,)
    scale: np.ndarray  # (bands,)

    @classmethod
    def of(cls, sample: np.ndarray) -> Standardisation:
        if not len(sample):
            return cls(np.zeros(sample.shape[1]), np.ones(sample.shape[1]))
        scale = sample.std(axis=0)
        return cls(sample.mean(axis=0), np.where(scale > 0, scale, 1.0))


@dataclass(frozen=True)
class KMeansModel:
    """Fitted centres (ordered by brightness) and the standardisation they live in."""

    bands: tuple[int, ...]
    centres: np.ndarray  # (k, bands), in the scene's units
    mean: np.ndarray  # (bands,) standardisation of the fit
    scale: np.ndarray  # (bands,)
    seed: int
    sample_size: int  # valid pixels the fit saw
    inertia: float  # sklearn's, in standardised units
    stretch: np.ndarray  # (bands, 2): the sample's 2nd and 98th percentiles, for the legend's colours

    @property
    def k(self) -> int:
        return len(self.centres)

    def assign(self, data: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """Cluster ids (uint8) of a ``(bands, h, w)`` block; invalid pixels are nodata (255)."""
        z = [(band.astype(np.float32) - np.float32(m)) / np.float32(s)
             for band, m, s in zip(data, self.mean, self.scale)]
        cz = ((self.centres - self.mean) / self.scale).astype(np.float32)
        best = np.zeros(data.shape[1:], dtype=np.uint8)
        best_d = None
        for c in range(self.k):
            d = np.zeros(data.shape[1:], dtype=np.float32)
            for b in range(len(z)):
                diff = z[b] - cz[c, b]
                d += diff * diff
            if best_d is None:
                best_d = d
            else:
                closer = d < best_d  # ties keep the lower id: the same answer in any chunk
                best[closer] = c
                np.minimum(best_d, d, out=best_d)
        best[~valid] = NODATA
        return best

    def classes(self) -> ClassList:
        """One class per cluster, ``cluster 0``.. ``cluster k-1``, coloured by its centre (bands 1-3 as RGB
        when there are three or more, else grey), stretched by the sample's 2-98 percentiles."""
        lo, hi = self.stretch[:, 0], self.stretch[:, 1]
        rgb = np.clip((self.centres - lo) / np.where(hi > lo, hi - lo, 1) * 255, 0, 255).round().astype(int)
        rgb = rgb[:, :3] if rgb.shape[1] >= 3 else np.repeat(rgb[:, :1], 3, axis=1)
        return ClassList(tuple(SegClass(i, f"cluster {i}", "#{:02x}{:02x}{:02x}".format(*map(int, c)))
                               for i, c in enumerate(rgb)))

    def to_dict(self) -> dict:
        return {
            "method": "kmeans", "bands": list(self.bands), "k": self.k,
            "centres": self.centres.tolist(), "standardisation": {"mean": self.mean.tolist(),
                                                                   "std": self.scale.tolist()},
            "seed": self.seed, "sample_size": self.sample_size, "inertia": self.inertia,
            "stretch": self.stretch.tolist(), "order": "by mean brightness of the centres, darkest first",
        }

    @classmethod
    def from_dict(cls, data: dict, source: str | None = None) -> KMeansModel:
        try:
            if data.get("method") != "kmeans":
                raise ValueError(f"method is {data.get('method')!r}, not 'kmeans'")
            centres = np.asarray(data["centres"], dtype=np.float64)
            bands = tuple(int(b) for b in data["bands"])
            mean = np.asarray(data["standardisation"]["mean"], dtype=np.float64)
            scale = np.asarray(data["standardisation"]["std"], dtype=np.float64)
            stretch = np.asarray(data["stretch"], dtype=np.float64)
            if centres.ndim != 2 or centres.shape[1] != len(bands) or not mean.shape == scale.shape == (len(bands),):
                raise ValueError("centres, bands and standardisation do not agree in size")
            if not 1 <= len(centres) <= MAX_CLUSTERS or (scale <= 0).any():
                raise ValueError("needs 1..254 centres and positive standard deviations")
            return cls(bands, centres, mean, scale, int(data["seed"]), int(data["sample_size"]),
                       float(data["inertia"]), stretch.reshape(len(bands), 2))
        except (KeyError, TypeError, ValueError) as exc:
            raise GeosegError(f"not a geoseg k-means model ({exc})", source) from None

    @classmethod
    def read(cls, path: str | Path) -> KMeansModel:
        try:
            return cls.from_dict(json.loads(Path(path).read_text()), str(path))
        except FileNotFoundError:
            raise GeosegError("no such file", path) from None
        except (OSError, json.JSONDecodeError) as exc:
            raise GeosegError(f"not readable as JSON ({exc.__class__.__name__})", path) from None


def sample_pixels(info: SceneInfo, bands: tuple[int, ...], size: int, seed: int, workers: int = 1) -> np.ndarray:
    """About ``size`` valid pixels of the scene as a ``(n, bands)`` float64 array, the same for any chunking."""
    blocks = [(i, j, Window(x, y, min(SAMPLE_BLOCK, info.width - x), min(SAMPLE_BLOCK, info.height - y)))
              for i, y in enumerate(range(0, info.height, SAMPLE_BLOCK))
              for j, x in enumerate(range(0, info.width, SAMPLE_BLOCK))]
    total = info.height * info.width

    def draw(block) -> np.ndarray:
        i, j, win = block
        n = math.ceil(size * win.height * win.width / total)
        pos = np.random.default_rng([seed, i, j]).integers(0, win.height * win.width, n)
        data, valid = read_window(info, win, bands)
        keep = pos[valid.reshape(-1)[pos]]
        return data.reshape(len(bands), -1)[:, keep].T.astype(np.float64)

    with ThreadPoolExecutor(max(1, workers)) as pool:  # GDAL reads release the GIL; results keep block order
        parts = list(pool.map(draw, blocks))
    return np.concatenate(parts) if parts else np.zeros((0, len(bands)))


def fit_kmeans(sample: np.ndarray, k: int, bands: tuple[int, ...], seed: int, source: str) -> KMeansModel:
    """Fit ``k`` clusters on standardised samples; numbered by brightness."""
    from sklearn.cluster import KMeans

    if not 1 <= k <= MAX_CLUSTERS:
        raise GeosegError(f"--k must be 1..{MAX_CLUSTERS}, not {k}")
    distinct = len(np.unique(sample, axis=0)) if len(sample) else 0
    if distinct < k:
        raise GeosegError(f"has {distinct} distinct valid pixel value{'s' if distinct != 1 else ''} in the "
                          f"k-means sample; {k} clusters need at least {k}", source)
    std = Standardisation.of(sample)
    mean, scale = std.mean, std.scale
    z = (sample - mean) / scale
    km = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(z)
    centres = km.cluster_centers_ * scale + mean
    order = np.lexsort((*centres.T[::-1], centres.mean(axis=1)))  # brightness first, then the values
    stretch = np.percentile(sample, [2, 98], axis=0).T
    return KMeansModel(bands, centres[order], mean, scale, seed, len(sample), float(km.inertia_), stretch)
