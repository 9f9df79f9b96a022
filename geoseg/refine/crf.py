"""Dense CRF refinement of class probabilities (Krähenbühl and Koltun, NIPS 2011; DeepLab v1/v2).

A fully connected CRF over the pixels of a window: the unary term is the network's
``-log p``, the pairwise terms are a Gaussian kernel on position (smoothness) and a
bilateral kernel on position and band values (pixels alike in colour and near each other
take the same class), with Potts compatibility. Mean-field inference runs on
``pydensecrf2`` (the maintained fork of the authors' permutohedral-lattice code).

Large scenes are refined on **one global grid of windows**: each 512 px window (aligned to
geoseg's output blocks) is solved with a ``halo`` of context on every side, and keeps only
its own core. Windows never depend on the chunk size or the worker count, and each pixel
is owned by exactly one window's core, so the refined raster is bit-identical for any
chunking and scheduler; memory is bounded by one window and its halo per worker. The price
is that pairwise terms reach no further than the halo: a whole-scene CRF (which no large
scene fits in memory for) would differ where the bilateral kernel is wider than the halo.

Band values enter the bilateral kernel standardised by the bundle's per-band mean and std and
scaled by 64, so that ``bilateral_srgb`` keeps the meaning it has for 8-bit RGB (13 units ≈
a fifth of a typical band's spread) whatever the sensor's data type.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np

from geoseg.errors import GeosegError

WINDOW = 512  # the windows' cores: the output block, so chunks (multiples of it) hold whole windows
BAND_SCALE = 64.0  # a band's standard deviation in bilateral colour units


@dataclass(frozen=True)
class CRFSettings:
    """Kernel widths (pixels, colour units), Potts weights and mean-field iterations.

    Defaults are the reference implementation's (``pydensecrf``'s and the paper's examples):
    Gaussian ``sxy`` 3 with weight 3, bilateral ``sxy`` 80, ``srgb`` 13 with weight 10, 5 iterations.
    DeepLab v2's cross-validated VOC values were bilateral weight 4, ``sxy`` 67, ``srgb`` 3 and
    Gaussian weight 3, ``sxy`` 1.
    """

    gaussian_sxy: float = 3.0
    gaussian_weight: float = 3.0
    bilateral_sxy: float = 80.0
    bilateral_srgb: float = 13.0
    bilateral_weight: float = 10.0
    iterations: int = 5
    halo: int = 128  # context on every side of a window's core, in pixels

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0 or not np.isfinite(v):
                raise GeosegError(f"CRF setting {f.name} must be a number >= 0, not {v!r}")
        if self.iterations < 1 or self.iterations != int(self.iterations):
            raise GeosegError(f"CRF setting iterations must be a whole number >= 1, not {self.iterations!r}")
        if self.halo != int(self.halo):
            raise GeosegError(f"CRF setting halo must be a whole number of pixels, not {self.halo!r}")
        if self.gaussian_sxy <= 0 or self.bilateral_sxy <= 0 or self.bilateral_srgb <= 0:
            raise GeosegError("CRF kernel widths (gaussian_sxy, bilateral_sxy, bilateral_srgb) must be > 0")

    @classmethod
    def parse(cls, text: str | None, base: dict | None = None) -> CRFSettings:
        """Settings from ``key=value,...`` over ``base`` (a bundle's stored settings) over the defaults."""
        values: dict = dict(base or {})
        names = {f.name: f.type for f in fields(cls)}
        for item in (text or "").split(","):
            if not item.strip():
                continue
            key, eq, value = item.partition("=")
            key = key.strip().replace("-", "_")
            if not eq or key not in names:
                raise GeosegError(f"--crf takes key=value pairs of {', '.join(names)}; got {item.strip()!r}")
            try:
                values[key] = int(value) if key in ("iterations", "halo") else float(value)
            except ValueError:
                raise GeosegError(f"--crf {key} must be a number, not {value.strip()!r}") from None
        unknown = set(values) - set(names)
        if unknown:
            raise GeosegError(f"unknown CRF settings {sorted(unknown)}; known: {', '.join(names)}")
        return cls(**values)

    def to_dict(self) -> dict:
        return asdict(self)


def refine_probabilities(probs: np.ndarray, image: np.ndarray, settings: CRFSettings) -> np.ndarray:
    """Mean-field marginals ``(K, h, w)`` float32 of a dense CRF over one window.

    ``probs``: ``(K, h, w)`` class probabilities (any positive scale; normalised here).
    ``image``: ``(B, h, w)`` float32 band features in bilateral colour units.
    """
    # imported here, not at module level: only --refine crf loads the compiled lattice (a dependency)
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import create_pairwise_bilateral, create_pairwise_gaussian

    k, h, w = probs.shape
    p = np.maximum(probs.astype(np.float32), 1e-6)
    p /= p.sum(axis=0, keepdims=True)
    crf = dcrf.DenseCRF(h * w, k)
    crf.setUnaryEnergy(np.ascontiguousarray(-np.log(p).reshape(k, -1)))
    crf.addPairwiseEnergy(create_pairwise_gaussian((settings.gaussian_sxy,) * 2, (h, w)),
                          compat=settings.gaussian_weight)
    crf.addPairwiseEnergy(create_pairwise_bilateral((settings.bilateral_sxy,) * 2,
                                                    (settings.bilateral_srgb,) * len(image),
                                                    np.ascontiguousarray(image, dtype=np.float32), chdim=0),
                          compat=settings.bilateral_weight)
    return np.asarray(crf.inference(int(settings.iterations)), dtype=np.float32).reshape(k, h, w)


def band_features(data: np.ndarray, mean, std) -> np.ndarray:
    """Bands standardised by the bundle's statistics, in bilateral colour units (float32)."""
    m = np.asarray(mean, dtype=np.float32)[:, None, None]
    s = np.maximum(np.asarray(std, dtype=np.float32), 1e-6)[:, None, None]
    return (data.astype(np.float32) - m) / s * np.float32(BAND_SCALE)


def windows(height: int, width: int, row0: int, col0: int, rows: int, cols: int):
    """The grid windows whose cores lie in ``[row0, row0+rows) x [col0, col0+cols)`` (a chunk aligned to
    :data:`WINDOW`), as ``(core row, core col, core h, core w)``."""
    for y in range(row0, min(row0 + rows, height), WINDOW):
        for x in range(col0, min(col0 + cols, width), WINDOW):
            yield y, x, min(WINDOW, height - y), min(WINDOW, width - x)


def refine_chunk(scene, probabilities: str, bands: tuple[int, ...], mean, std, settings: CRFSettings,
                 window) -> np.ndarray:
    """Refined class ids ``(h, w)`` uint8 of a chunk: each of its grid windows solved with its halo.

    ``scene``: the :class:`geoseg.io.raster.SceneInfo`; ``probabilities``: a ``K``-band uint8 raster of
    the scene's blended probabilities (0..255); ``window``: the chunk, aligned to :data:`WINDOW`.
    Nodata pixels stay nodata (255).
    """
    import rasterio
    from rasterio.windows import Window

    from geoseg.classes import NODATA
    from geoseg.io.raster import read_window

    r0, c0, h, w = int(window.row_off), int(window.col_off), int(window.height), int(window.width)
    out = np.full((h, w), NODATA, dtype=np.uint8)
    halo = int(settings.halo)
    with rasterio.open(probabilities) as src:
        for y, x, ch, cw in windows(scene.height, scene.width, r0, c0, h, w):
            y0, x0 = max(0, y - halo), max(0, x - halo)
            y1, x1 = min(scene.height, y + ch + halo), min(scene.width, x + cw + halo)
            box = Window(x0, y0, x1 - x0, y1 - y0)
            data, valid = read_window(scene, box, bands)
            probs = src.read(window=box).astype(np.float32) + 0.5  # quantised to 1/255: never zero
            q = refine_probabilities(probs, band_features(data, mean, std), settings)
            labels = q.argmax(axis=0).astype(np.uint8)
            labels[~valid] = NODATA
            out[y - r0 : y - r0 + ch, x - c0 : x - c0 + cw] = labels[y - y0 : y - y0 + ch, x - x0 : x - x0 + cw]
    return out
