"""SLIC superpixels (Achanta et al., 2012) for scenes larger than memory, seam-exact across chunks.

SLIC is k-means in colour and position: seeds on a regular grid of spacing ``S``
pixels, each pixel assigned to the nearest seed among those near it by

    D² = Σ_b (z_b − c_b)² + (compactness / S)² · ((y − c_y)² + (x − c_x)²)

(``z``: the bands standardised by a scene-wide sample and scaled so that one standard
deviation counts :data:`COLOUR_UNITS`, about what the CIELAB distance spans in aerial
RGB, so that ``compactness`` means what it means for ``skimage.segmentation.slic``),
then each seed moved to the mean of its pixels, ``iterations`` times; fragments are then
given to the neighbouring segment they share most border with.

What makes it work on a scene of any size, bit-identical for any chunk size, worker
count and scheduler:

- **One global seed grid.** Seed ``(r, c)`` starts in the cell ``[r·S, (r+1)·S) ×
  [c·S, (c+1)·S)`` of the scene, at the mean position and colour of the cell's valid
  pixels; its segment id is ``r · columns + c + 1`` everywhere (0: nodata). A pixel may
  only join a seed of its own cell or of the 8 around it (the grid-neighbour search of
  gSLICr and fast-slic; the original searches a 2S box around each seed, which is the
  same set for seeds that stay in their cell), so every computation is an array
  operation over cells.
- **Fixed windows with a halo.** The scene is cut into :data:`WINDOW` px windows (never
  the chunk size). Each window runs SLIC on its core plus ``halo`` cells of context on
  every side (seeds there move as they would in a whole-scene run, up to the halo's
  edge), and keeps the labels of its core: every pixel is labelled by exactly one
  window, so the segments tile the scene without gaps or overlaps, and a segment that
  straddles a window edge keeps one id on both sides.
- **Polygons by seed ownership.** A segment's polygon is traced by the window that holds
  its seed cell (as instances are owned by the tile holding their centre), from the
  label raster read with a margin that holds every pixel the segment can have.

scikit-image's ``slic`` is the reference this is tested against
(``tests/test_cluster.py``); it is not used itself because it numbers segments by its
own per-image seed order and re-seeds by k-means under a mask, so windows of one scene
could not share segment ids, and it holds the whole image.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
from rasterio.windows import Window

from geoseg.clustering.kmeans import Standardisation
from geoseg.errors import GeosegError
from geoseg.io.raster import SceneInfo, ground_sample_distance, read_window

WINDOW = 1024  # px: the window grid SLIC runs on (two output blocks), whatever the chunk size
COLOUR_UNITS = 10.0  # one standard deviation of a band, in colour-distance units
HALO_CELLS = 3  # context around a window's core, in cells
MERGE_ROUNDS = 64  # fragments bordered only by other fragments wait for the next round
MIN_SIZE_FACTOR = 0.5  # scikit-image's: segments under half a cell join a neighbour
MARGIN_CELLS = 4  # the first margin tried around a window for its segments, in cells (doubled if short)


@dataclass(frozen=True)
class SlicSettings:
    step: int  # S: the seed spacing in pixels
    compactness: float = 10.0
    iterations: int = 10
    window: int = WINDOW
    halo_cells: int = HALO_CELLS

    def __post_init__(self) -> None:
        if not 2 <= self.step <= self.window // 2:
            raise GeosegError(f"--segment-size must come to 2..{self.window // 2} pixels, not {self.step}")
        if not self.compactness > 0:
            raise GeosegError(f"--compactness must be positive, not {self.compactness}")
        if not 1 <= self.iterations <= 100:
            raise GeosegError(f"--iterations must be 1..100, not {self.iterations}")


def segment_step(size: str | float | int, info: SceneInfo) -> int:
    """The seed spacing in pixels from ``--segment-size``: ``20m`` (ground metres) or ``40px`` / ``40`` (pixels)."""
    text = str(size).strip().lower()
    m = re.fullmatch(r"([0-9]*\.?[0-9]+)\s*(m|px)?", text)
    if m is None:
        raise GeosegError(f"--segment-size takes metres (20m) or pixels (40px), not {size!r}")
    value, unit = float(m.group(1)), m.group(2) or "px"
    if unit == "px":
        return max(1, round(value))
    gsd = ground_sample_distance(info)
    if gsd is None:
        raise GeosegError(f"has no CRS, so --segment-size {size} in metres has no size in pixels; give it "
                          "in pixels (40px)", info.path)
    return max(1, round(value / gsd))


@dataclass(frozen=True)
class Layout:
    """The scene's seed grid and window grid."""

    height: int
    width: int
    step: int
    window: int

    @property
    def cell_rows(self) -> int:
        return math.ceil(self.height / self.step)

    @property
    def cell_cols(self) -> int:
        return math.ceil(self.width / self.step)

    def windows(self) -> list[tuple[int, int, Window]]:
        w = self.window
        return [(i, j, Window(x, y, min(w, self.width - x), min(w, self.height - y)))
                for i, y in enumerate(range(0, self.height, w)) for j, x in enumerate(range(0, self.width, w))]

    def segment_id(self, row: np.ndarray, col: np.ndarray) -> np.ndarray:
        return row.astype(np.int64) * self.cell_cols + col + 1

    def seed_cell(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.divmod(ids.astype(np.int64) - 1, self.cell_cols)

    def owner(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The window (row, column) whose core holds each segment's seed cell origin."""
        r, c = self.seed_cell(ids)
        return (r * self.step) // self.window, (c * self.step) // self.window

    def cell_span(self, start: int, stop: int, extra: int, cells: int) -> tuple[int, int]:
        """Cells covering pixels ``[start, stop)`` and ``extra`` cells more each side, within the grid."""
        return max(0, start // self.step - extra), min(cells, -(-stop // self.step) + extra)


def _standardised(data: np.ndarray, std: Standardisation) -> np.ndarray:
    out = np.empty(data.shape, dtype=np.float32)
    for b in range(len(data)):
        out[b] = (data[b].astype(np.float32) - np.float32(std.mean[b])) * np.float32(COLOUR_UNITS / std.scale[b])
    return out


def slic_cells(z: np.ndarray, valid: np.ndarray, step: int, compactness: float, iterations: int) -> np.ndarray:
    """Grid SLIC over a cell-aligned block: the local cell index (row-major, 0..) of each pixel's seed, −1 invalid.

    ``z``: ``(B, H, W)`` float32 features with ``H`` and ``W`` multiples of ``step``.
    """
    nb, h, w = z.shape
    s = step
    nr, nc = h // s, w // s
    zc = z.reshape(nb, nr, s, nc, s)
    vc = valid.reshape(nr, s, nc, s)
    vf = vc.astype(np.float32)
    # pixel position inside its cell, broadcast against the (rows, s, columns, s) view
    uy = np.arange(s, dtype=np.float32).reshape(1, s, 1, 1)
    ux = np.arange(s, dtype=np.float32).reshape(1, 1, 1, s)
    count = vf.sum(axis=(1, 3))  # (nr, nc)
    alive = count > 0
    safe = np.maximum(count, 1)
    cy = (vf * uy).sum(axis=(1, 3)) / safe  # seed position relative to its own cell origin
    cx = (vf * ux).sum(axis=(1, 3)) / safe
    cz = (zc * vf).sum(axis=(2, 4)) / safe  # (nb, nr, nc)
    weight = np.float32((compactness / s) ** 2)
    offsets = [(dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1)]
    dr_of = np.array([o[0] for o in offsets], dtype=np.int64)
    dc_of = np.array([o[1] for o in offsets], dtype=np.int64)
    cell_r = np.arange(nr).reshape(nr, 1, 1, 1)
    cell_c = np.arange(nc).reshape(1, 1, nc, 1)
    label = None
    for it in range(iterations):
        # pad by one cell of dead seeds so that every offset is a plain slice
        pad = ((1, 1), (1, 1))
        p_dead = np.where(np.pad(alive, pad), np.float32(0), np.float32(np.inf))
        p_cy, p_cx = np.pad(cy, pad), np.pad(cx, pad)
        p_cz = np.pad(cz, ((0, 0), *pad))
        best = np.full((nr, s, nc, s), np.inf, dtype=np.float32)
        choice = np.zeros((nr, s, nc, s), dtype=np.int8)
        closer = np.empty((nr, s, nc, s), dtype=bool)
        for k, (dr, dc) in enumerate(offsets):
            sl = (slice(1 + dr, 1 + dr + nr), slice(1 + dc, 1 + dc + nc))
            dy = uy - (p_cy[sl] + dr * s).astype(np.float32)[:, None, :, None]
            dx = ux - (p_cx[sl] + dc * s).astype(np.float32)[:, None, :, None]
            d = weight * (dy * dy + dx * dx)
            for b in range(nb):
                diff = zc[b] - p_cz[b][sl].astype(np.float32)[:, None, :, None]
                d += diff * diff
            d += p_dead[sl][:, None, :, None]  # cells without a seed: never the nearest
            np.less(d, best, out=closer)  # ties keep the earlier offset: the same answer in every window
            np.copyto(best, d, where=closer)
            np.copyto(choice, np.int8(k), where=closer)
        lr = cell_r + dr_of[choice]
        lc = cell_c + dc_of[choice]
        label = np.where(vc, lr * nc + lc, -1)
        if it == iterations - 1:
            break
        # move each seed to the mean of its pixels (positions relative to its own cell)
        sel = label >= 0
        idx = label[sel]
        n = np.bincount(idx, minlength=nr * nc).astype(np.float64)
        py = (np.broadcast_to(cell_r * s + uy, label.shape) - lr * s)[sel]  # relative to the seed's cell
        px = (np.broadcast_to(cell_c * s + ux, label.shape) - lc * s)[sel]
        has = n > 0
        m = np.maximum(n, 1)
        ny = np.bincount(idx, weights=py, minlength=nr * nc) / m
        nx = np.bincount(idx, weights=px, minlength=nr * nc) / m
        cy = np.where(has, ny, cy.ravel()).reshape(nr, nc)
        cx = np.where(has, nx, cx.ravel()).reshape(nr, nc)
        new_cz = np.empty_like(cz)
        for b in range(nb):
            mb = np.bincount(idx, weights=zc[b][sel], minlength=nr * nc) / m
            new_cz[b] = np.where(has, mb, cz[b].ravel()).reshape(nr, nc)
        cz = new_cz
    return label.reshape(h, w)


def enforce_connectivity(cells: np.ndarray, min_size: int = 0) -> np.ndarray:
    """Each segment keeps its largest 4-connected part; its other parts, and segments whose largest part has
    fewer than ``min_size`` pixels, join the neighbouring segment they share most border with (the
    smallest id on ties), up to :data:`MERGE_ROUNDS` rounds (scikit-image's ``enforce_connectivity``,
    whose ``min_size_factor`` 0.5 of a cell :func:`label_window` uses)."""
    from geoseg.vector.tracing import label_values

    n_cells = int(cells.max()) + 2 if cells.size else 1
    codes = (cells + 1).astype(np.int64)  # 0: invalid
    skip = np.zeros(n_cells, dtype=bool)
    skip[0] = True
    comp, code_of, size = label_values(codes, skip, False)
    code_of = np.asarray(code_of, dtype=np.int64)
    size = np.asarray(size, dtype=np.int64)
    n = len(code_of)
    if n <= 1:
        return cells
    # the largest part of each code (the first in raster order on ties)
    order = np.lexsort((np.arange(n), -size, code_of))
    first = np.ones(n, dtype=bool)
    first[1:] = code_of[order][1:] != code_of[order][:-1]
    keeper = np.zeros(n, dtype=bool)
    keeper[order[first]] = True
    keeper &= size >= min_size
    keeper[0] = False
    if keeper[1:].all():
        return cells
    # border pairs between parts, both directions, counted once per shared pixel edge
    a = np.concatenate([comp[:, :-1].ravel(), comp[:-1, :].ravel()])
    b = np.concatenate([comp[:, 1:].ravel(), comp[1:, :].ravel()])
    diff = (a != b) & (a > 0) & (b > 0)
    a, b = a[diff].astype(np.int64), b[diff].astype(np.int64)
    pa, pb = np.concatenate([a, b]), np.concatenate([b, a])
    pair, count = np.unique(pa * n + pb, return_counts=True)
    pa, pb = pair // n, pair % n
    final_code = code_of.copy()
    for _ in range(MERGE_ROUNDS):
        todo = ~keeper[pa] & keeper[pb]
        if not todo.any():
            break
        sa, sb, sc = pa[todo], pb[todo], count[todo]
        # per fragment: most shared border, then the smallest segment code
        pick = np.lexsort((final_code[sb], -sc, sa))
        sa, sb = sa[pick], sb[pick]
        head = np.ones(len(sa), dtype=bool)
        head[1:] = sa[1:] != sa[:-1]
        frag, into = sa[head], sb[head]
        final_code[frag] = final_code[into]
        keeper[frag] = True
    out = final_code[comp] - 1
    out[comp == 0] = -1
    return out


def label_window(info: SceneInfo, layout: Layout, bands: tuple[int, ...], std: Standardisation,
                 settings: SlicSettings, core: Window) -> np.ndarray:
    """Segment ids (int32, 0 = nodata) of a window's core, from SLIC over the core and its halo."""
    s = layout.step
    r0, r1 = layout.cell_span(core.row_off, core.row_off + core.height, settings.halo_cells, layout.cell_rows)
    c0, c1 = layout.cell_span(core.col_off, core.col_off + core.width, settings.halo_cells, layout.cell_cols)
    y0, x0 = r0 * s, c0 * s
    h, w = min(r1 * s, info.height) - y0, min(c1 * s, info.width) - x0
    data, valid = read_window(info, Window(x0, y0, w, h), bands)
    hh, ww = (r1 - r0) * s, (c1 - c0) * s
    z = np.zeros((len(bands), hh, ww), dtype=np.float32)
    z[:, :h, :w] = _standardised(data, std)
    v = np.zeros((hh, ww), dtype=bool)
    v[:h, :w] = valid
    del data
    cells = slic_cells(z, v, s, settings.compactness, settings.iterations)
    del z
    cells = enforce_connectivity(cells, int(MIN_SIZE_FACTOR * s * s))
    ys = slice(core.row_off - y0, core.row_off - y0 + core.height)
    xs = slice(core.col_off - x0, core.col_off - x0 + core.width)
    local = cells[ys, xs]
    nc = c1 - c0
    ids = layout.segment_id(r0 + local // nc, c0 + local % nc)
    return np.where(local >= 0, ids, 0).astype(np.int32)


@dataclass
class WindowSegments:
    """The polygons (pixel coordinates of the scene) and statistics of the segments one window owns."""

    ids: np.ndarray  # int64, ascending
    geoms: np.ndarray  # Polygon or MultiPolygon per id
    pixels: np.ndarray  # int64
    means: np.ndarray  # (n, bands) float64, in the scene's units

    @classmethod
    def empty(cls, bands: int) -> WindowSegments:
        return cls(np.zeros(0, np.int64), np.zeros(0, object), np.zeros(0, np.int64), np.zeros((0, bands)))


def trace_window(info: SceneInfo, layout: Layout, bands: tuple[int, ...], labels_path: str,
                 row: int, col: int, core: Window) -> WindowSegments:
    """Trace the segments whose seed cells lie in window ``(row, col)`` from the label raster."""
    import rasterio
    import shapely

    from geoseg.vector.tracing import label_values, polygons

    margin = MARGIN_CELLS * layout.step
    while True:  # the margin holds every pixel of the window's segments (doubled in the rare case it does not)
        y0, x0 = max(0, core.row_off - margin), max(0, core.col_off - margin)
        y1 = min(info.height, core.row_off + core.height + margin)
        x1 = min(info.width, core.col_off + core.width + margin)
        win = Window(x0, y0, x1 - x0, y1 - y0)
        with rasterio.open(labels_path) as src:
            ids = src.read(1, window=win)
        present = np.unique(ids)
        present = present[present > 0]
        orow, ocol = layout.owner(present)
        mine = present[(orow == row) & (ocol == col)]
        if not len(mine):
            return WindowSegments.empty(len(bands))
        code = np.searchsorted(mine, ids)
        code = np.where(mine[np.minimum(code, len(mine) - 1)] == ids, code + 1, 0)
        touches = ((y0 > 0 and code[0].any()) or (y1 < info.height and code[-1].any())
                   or (x0 > 0 and code[:, 0].any()) or (x1 < info.width and code[:, -1].any()))
        if not touches:
            break
        margin *= 2
    data, _ = read_window(info, win, bands)
    flat = code.ravel()
    pixels = np.bincount(flat, minlength=len(mine) + 1)[1:]
    sel = flat > 0
    means = np.column_stack([np.bincount(flat[sel], weights=band.ravel()[sel].astype(np.float64),
                                         minlength=len(mine) + 1)[1:] / np.maximum(pixels, 1)
                             for band in data]) if sel.any() else np.zeros((len(mine), len(bands)))
    del data
    skip = np.zeros(len(mine) + 1, dtype=bool)
    skip[0] = True
    comp, comp_code, _ = label_values(code.astype(np.int64), skip, False)
    comp_code = np.asarray(comp_code, dtype=np.int64)
    lab, geoms = polygons(comp, x0, y0)
    seg = comp_code[lab]  # the code (1..) of each traced part, parts in label order
    order = np.argsort(seg, kind="stable")
    seg, geoms = seg[order], geoms[order]
    counts = np.bincount(seg, minlength=len(mine) + 1)[1:]
    single = counts == 1
    out = np.empty(len(mine), dtype=object)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    for i in range(len(mine)):
        if single[i]:
            out[i] = geoms[starts[i]]
        else:
            out[i] = shapely.multipolygons(list(geoms[starts[i]:starts[i] + counts[i]]))
    return WindowSegments(mine.astype(np.int64), out, pixels.astype(np.int64), means)
