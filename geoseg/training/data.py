"""Training data: chips cut from GeoTIFF scenes with labels rasterized on the fly, or chip folders.

Every chip is drawn from a generator seeded by ``(seed, epoch, index)``, so an
epoch's chips and augmentations are the same with any number of DataLoader
workers, and a resumed run sees what an uninterrupted one would have.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio.errors import RasterioError
from rasterio.windows import Window
from scipy import ndimage

from geoseg.classes import NODATA
from geoseg.errors import GeosegError
from geoseg.io.raster import inspect_scene, read_window
from geoseg.training.config import AugmentConfig, SceneConfig, TrainConfig
from geoseg.vector.labels import Grid, RasterLabels, VectorLabels, is_vector, read_vectors

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")


@dataclass(frozen=True)
class SceneSource:
    """A training scene: its grid, its labels, and which blocks are held out for validation."""

    info: object  # geoseg.io.raster.SceneInfo
    grid: Grid
    labels: RasterLabels | VectorLabels
    block: int
    held_out: frozenset  # (row, col) validation blocks, never used for training
    test: frozenset = frozenset()  # (row, col) test blocks: neither trained on nor used to pick the epoch
    weight: float = 1.0  # sampling weight per training chip position (the scene's `weight`)

    @property
    def excluded(self) -> frozenset:
        return self.held_out | self.test

    def block_rows_cols(self) -> tuple[int, int]:
        return math.ceil(self.grid.height / self.block), math.ceil(self.grid.width / self.block)

    def chip_is_training(self, y: int, x: int, size: int) -> bool:
        b = self.block
        for r in range(y // b, (y + size - 1) // b + 1):
            for c in range(x // b, (x + size - 1) // b + 1):
                if (r, c) in self.excluded:
                    return False
        return True

    def chip_origins(self, size: int, stride: int) -> np.ndarray:
        """Top-left corners ``(y, x)``, on a ``stride`` lattice, of chips that touch no held-out block."""
        ys = np.arange(0, self.grid.height - size + 1, stride)
        xs = np.arange(0, self.grid.width - size + 1, stride)
        ok = np.ones((len(ys), len(xs)), dtype=bool)
        b = self.block
        for r, c in self.excluded:  # a chip touches block (r, c) when it overlaps its rows and columns
            rows = (ys + size > r * b) & (ys < (r + 1) * b)
            cols = (xs + size > c * b) & (xs < (c + 1) * b)
            ok &= ~(rows[:, None] & cols[None, :])
        iy, ix = np.nonzero(ok)
        return np.stack([ys[iy], xs[ix]], axis=1)

    def block_windows(self, blocks) -> list[Window]:
        b = self.block
        return [Window(c * b, r * b, min(b, self.grid.width - c * b), min(b, self.grid.height - r * b))
                for r, c in sorted(blocks)]

    def validation_windows(self) -> list[Window]:
        return self.block_windows(self.held_out)

    def test_windows(self) -> list[Window]:
        return self.block_windows(self.test)

    def training_windows(self) -> list[Window]:
        rows, cols = self.block_rows_cols()
        return self.block_windows((r, c) for r in range(rows) for c in range(cols) if (r, c) not in self.excluded)


def _listed_blocks(grid: Grid, block: int, listed: list, key: str) -> frozenset:
    rows, cols = math.ceil(grid.height / block), math.ceil(grid.width / block)
    held = {(int(r), int(c)) for r, c in listed}
    bad = [b for b in held if not (0 <= b[0] < rows and 0 <= b[1] < cols)]
    if bad:
        raise GeosegError(f"validation.{key} block {list(bad[0])} is outside the {rows}x{cols} block grid")
    return frozenset(held)


def split_blocks(grid: Grid, block: int, fraction: float, holdout: list, seed: int,
                 test: frozenset = frozenset()) -> frozenset:
    """Blocks held out for validation: the listed ones, else a seeded ``fraction`` of the non-test blocks."""
    rows, cols = math.ceil(grid.height / block), math.ceil(grid.width / block)
    if holdout:
        return _listed_blocks(grid, block, holdout, "holdout")
    n = max(1, round(fraction * rows * cols)) if fraction > 0 else 0
    order = [int(i) for i in np.random.default_rng(seed).permutation(rows * cols)
             if (int(i) // cols, int(i) % cols) not in test][:n]
    return frozenset((i // cols, i % cols) for i in order)


def open_scene(sc: SceneConfig, cfg: TrainConfig, held_out: bool = True) -> SceneSource:
    """Check a scene and its labels; one clear error naming the file otherwise."""
    info = inspect_scene(sc.image, cfg.bands)
    grid = Grid(info.crs, info.transform, info.width, info.height)
    chip = cfg.model.chip_size
    if chip > min(info.width, info.height):
        raise GeosegError(f"chip size {chip} is larger than the scene ({info.width}x{info.height})", sc.image)
    lab = sc.labels
    if is_vector(lab.path):
        background = next((c.id for c in cfg.classes if not c.vectorize), 0)
        geoms, ids = read_vectors(lab.path, grid.crs, lab.class_field, cfg.classes, "labels", lab.class_value,
                                  mapping=lab.mapping, buffers=lab.buffer_m, strict=True)
        import shapely

        scene_box = shapely.box(*grid.bounds)
        if not geoms or not any(shapely.intersects(np.asarray(geoms, dtype=object), scene_box)):
            raise GeosegError(f"labels have no features over the scene {Path(sc.image).name}", lab.path)
        labels = VectorLabels(geoms, ids, background)
    else:
        if cfg.objects is not None:
            raise GeosegError("objects (object channels) need vector labels, one polygon per object; a label "
                              "raster cannot tell touching objects apart", lab.path)
        try:
            with rasterio.open(lab.path) as src:
                same = src.crs == grid.crs and src.transform == grid.transform and src.shape == (info.height,
                                                                                                info.width)
                labels = RasterLabels(lab.path, not same, src.nodata)
        except RasterioError as exc:
            raise GeosegError(f"not a readable raster ({exc})", lab.path) from None
    v = cfg.validation
    tests, holdout = (v.test if sc.test is None else sc.test), (v.holdout if sc.holdout is None else sc.holdout)
    fraction = v.fraction if sc.holdout is None else 0.0  # a scene's own empty list holds nothing out
    test = _listed_blocks(grid, v.block_size, tests, "test") if held_out else frozenset()
    held = split_blocks(grid, v.block_size, fraction, holdout, cfg.train.seed, test) if held_out else frozenset()
    if held & test:
        raise GeosegError(f"validation.holdout and validation.test share block {list(sorted(held & test)[0])}",
                          cfg.source)
    src = SceneSource(info, grid, labels, v.block_size, held, test, sc.weight)
    if held_out and not len(src.chip_origins(chip, 1 if chip < 64 else 8)):
        raise GeosegError(f"no {chip} px chip fits outside the validation blocks; use smaller chips or blocks",
                          sc.image)
    return src


def read_labels(src: SceneSource, win: Window, valid: np.ndarray) -> np.ndarray:
    lab = src.labels.read(src.grid, win)
    lab[~valid] = NODATA
    return lab


def band_statistics(sources: list[SceneSource], bands: tuple[int, ...]) -> tuple[tuple, tuple]:
    """Per-band mean and standard deviation of valid training pixels, streamed window by window."""
    n = 0
    s = np.zeros(len(bands))
    ss = np.zeros(len(bands))
    for src in sources:
        for win in src.training_windows():
            data, valid = read_window(src.info, win, bands)
            px = data[:, valid].astype(np.float64)
            n += px.shape[1]
            s += px.sum(axis=1)
            ss += np.square(px).sum(axis=1)
    if n == 0:
        raise GeosegError("the training scenes have no valid pixels")
    mean = s / n
    std = np.sqrt(np.maximum(ss / n - mean**2, 0))
    return tuple(float(m) for m in mean), tuple(float(max(v, 1e-6)) for v in std)


def draw_warp(cfg: AugmentConfig, rng: np.random.Generator, chip: int) -> tuple[float, float, int]:
    """A chip's zoom ``f`` (source pixels per chip pixel), angle (radians) and the source side it needs.

    Nothing is drawn from ``rng`` when scaling and rotation are off, so their
    absence leaves every other draw of the chip unchanged.
    """
    if not (cfg.scale or cfg.rotate):
        return 1.0, 0.0, chip
    f = float(np.exp(rng.uniform(-1, 1) * np.log1p(cfg.scale))) if cfg.scale else 1.0
    a = float(np.deg2rad(rng.uniform(-cfg.rotate, cfg.rotate))) if cfg.rotate else 0.0
    return f, a, source_side(chip, f, a)


def source_side(chip: int, f: float, angle: float) -> int:
    """Side of the square source window whose pixels a ``chip`` zoomed by ``f`` and turned by ``angle`` reads."""
    if f == 1.0 and angle == 0.0:
        return chip
    return int(math.ceil(chip * f * (abs(math.cos(angle)) + abs(math.sin(angle))))) + 2


def warp(arr: np.ndarray, f: float, angle: float, chip: int, order: int, cval=0) -> np.ndarray:
    """Resample the centre of ``arr`` (bands, S, S) onto a ``chip`` grid zoomed by ``f`` and turned by ``angle``.

    Chip pixel ``u`` (from the chip's centre) reads source point ``f R(angle) u``
    from the source centre: ``order`` 1 is bilinear (imagery), 0 nearest (labels,
    masks). At ``f`` 1 and a multiple of 90 degrees it is an exact crop and turn.
    """
    c, s = math.cos(angle), math.sin(angle)
    if abs(c) < 1e-12:
        c = 0.0
    if abs(s) < 1e-12:
        s = 0.0
    m = f * np.array([[c, -s], [s, c]])
    centre_out = np.full(2, (chip - 1) / 2)
    centre_in = (np.array(arr.shape[-2:]) - 1) / 2
    offset = centre_in - m @ centre_out
    out = np.empty(arr.shape[:-2] + (chip, chip), dtype=arr.dtype)
    for i in np.ndindex(arr.shape[:-2]):
        ndimage.affine_transform(arr[i], m, offset, output_shape=(chip, chip), output=out[i], order=order,
                                 mode="constant", cval=cval, prefilter=False)
    return out


def augment(x: np.ndarray, y: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator,
            also: np.ndarray | None = None):
    """Flips, quarter turns, contrast and brightness of a chip ``x`` and its labels ``y``; ``also`` (a 2-D
    raster of the chip's grid, e.g. its instances) is flipped and turned with them. Returns ``(x, y)``,
    or ``(x, y, also)`` when given."""
    if cfg.flips:
        if rng.random() < 0.5:
            x, y = x[:, :, ::-1], y[:, ::-1]
            also = None if also is None else also[:, ::-1]
        if rng.random() < 0.5:
            x, y = x[:, ::-1], y[::-1]
            also = None if also is None else also[::-1]
    if cfg.rot90:
        k = int(rng.integers(4))
        x, y = np.rot90(x, k, axes=(1, 2)), np.rot90(y, k)
        also = None if also is None else np.rot90(also, k)
    if cfg.contrast:
        x = x * np.float32(rng.uniform(1 - cfg.contrast, 1 + cfg.contrast))
    if cfg.brightness:
        x = x + np.float32(rng.uniform(-cfg.brightness, cfg.brightness))
    x, y = np.ascontiguousarray(x, dtype=np.float32), np.ascontiguousarray(y)
    return (x, y) if also is None else (x, y, np.ascontiguousarray(also))


class SceneChips(torch.utils.data.Dataset):
    """Random chips from the training blocks of scenes: windowed reads, labels rasterized per chip."""

    def __init__(self, sources: list[SceneSource], cfg: TrainConfig, mean, std, instances: bool = False) -> None:
        """``instances``: also burn each chip's polygons one number each (``draw``'s last item)."""
        self.sources, self.cfg = sources, cfg
        self.instances = instances or cfg.objects is not None
        self.mean = np.asarray(mean, np.float32)[:, None, None]
        self.std = np.asarray(std, np.float32)[:, None, None]
        self.epoch = 0
        self.stride = max(1, cfg.model.chip_size // 8)
        self.origins = [s.chip_origins(cfg.model.chip_size, self.stride) for s in sources]
        area = np.array([len(o) * s.weight for s, o in zip(sources, self.origins)], dtype=float)
        self.weights = area / area.sum()
        self.background = {c.id for c in cfg.classes if not c.vectorize}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.cfg.sampling.chips_per_epoch

    def __getitem__(self, i: int):
        """``(image, labels)``, and with ``objects`` configured ``(image, labels, object targets)``: uint8
        ``(3 * object classes, H, W)`` body, border and contact of the chip's own polygons."""
        rng, src, _, data, valid, lab, ids = self.draw(i)
        x = (data.astype(np.float32) - self.mean) / self.std
        x[:, ~valid] = 0
        obj = self.cfg.objects
        if obj is None:
            x, lab = augment(x, lab, self.cfg.augment, rng)
            return torch.from_numpy(x), torch.from_numpy(lab.astype(np.int64))
        x, lab, ids = augment(x, lab, self.cfg.augment, rng, ids)
        return torch.from_numpy(x), torch.from_numpy(lab.astype(np.int64)), torch.from_numpy(
            chip_object_targets(ids, src.labels.ids, obj))

    def draw(self, i: int):
        """Chip ``i`` of the epoch: ``(rng, source, window, data, valid, labels, instances)``.

        ``window`` is every source pixel the chip was made from: the chip itself,
        or with ``augment.scale``/``rotate`` the larger window it was resampled from.
        ``instances`` (when the dataset burns them, else None): int32, feature ``n`` of the
        scene's labels as ``n + 1``, 0 where none or nodata, resampled like the labels.
        """
        cfg = self.cfg
        rng = np.random.default_rng([cfg.train.seed, self.epoch, i])
        want_rare = rng.random() < cfg.sampling.class_balance
        c = cfg.model.chip_size
        best = None
        for _ in range(64):
            k = int(rng.choice(len(self.sources), p=self.weights))
            src, origins = self.sources[k], self.origins[k]
            y, x = (int(v) for v in origins[int(rng.integers(len(origins)))])
            jy, jx = (int(v) for v in rng.integers(0, self.stride, 2))
            y2, x2 = min(y + jy, src.grid.height - c), min(x + jx, src.grid.width - c)
            if src.chip_is_training(y2, x2, c):
                y, x = y2, x2
            f, angle, side = draw_warp(cfg.augment, rng, c)
            win = Window(x, y, c, c)
            if side != c:  # the zoomed, turned chip reads a window around the chip's centre
                y3 = min(max(y + c // 2 - side // 2, 0), src.grid.height - side)
                x3 = min(max(x + c // 2 - side // 2, 0), src.grid.width - side)
                if y3 >= 0 and x3 >= 0 and src.chip_is_training(y3, x3, side):
                    win = Window(x3, y3, side, side)
            data, valid = read_window(src.info, win, cfg.bands)
            if valid.mean() < cfg.sampling.min_valid:
                continue
            lab = read_labels(src, win, valid)
            if win.width != c:
                data = np.where(valid, data.astype(np.float32), self.mean)  # nodata normalises to 0
                data = warp(data, f, angle, c, order=1)
                valid = warp(valid[None].view(np.uint8), f, angle, c, order=0)[0].astype(bool)
                lab = warp(lab[None], f, angle, c, order=0, cval=NODATA)[0]
            best = (rng, src, win, data, valid, lab, (f, angle))
            if not want_rare or np.isin(lab, list(self.background) + [NODATA], invert=True).any():
                break
        if best is None:
            raise GeosegError("could not draw a valid training chip in 64 tries (too much nodata?)")
        rng, src, win, data, valid, lab, (f, angle) = best
        ids = None
        if self.instances:
            from geoseg.vector.labels import read_instances

            ids, _ = read_instances(src.labels, src.grid, win)
            if win.width != c:
                ids = warp(ids[None], f, angle, c, order=0, cval=0)[0]
            ids[~valid] = 0
        return rng, src, win, data, valid, lab, ids


def chip_object_targets(ids: np.ndarray, feature_classes: np.ndarray, objects) -> np.ndarray:
    """uint8 ``(3 * len(objects.classes), H, W)``: for each object class, the body, border and contact
    targets (:func:`geoseg.training.targets.object_targets`) of that class's instances in ``ids``
    (feature ``n`` as ``n + 1``; ``feature_classes[n]`` its class id)."""
    from geoseg.training.targets import object_targets

    cls = np.concatenate([[-1], np.asarray(feature_classes)])[ids]  # -1: no feature
    return np.concatenate([object_targets(np.where(cls == c, ids, 0), objects.border, objects.contact)
                           for c in objects.classes])


class ChipFolder(torch.utils.data.Dataset):
    """A VOC-style dataset: ``images/NAME.jpg`` with ``masks/NAME.png`` class masks."""

    def __init__(self, images: str | None, masks: str | None, cfg: TrainConfig, mean=None, std=None,
                 ignore_index: int = 255, names: list[str] | None = None, files: dict | None = None,
                 lut: np.ndarray | None = None) -> None:
        """Chips from two folders matched by stem, or ``files`` (name -> (image, mask)) from a benchmark
        adapter with ``lut`` recoding mask values to class ids (NODATA: ignored)."""
        self.cfg = cfg
        self.lut = lut
        if files is not None:
            img = {n: Path(i) for n, (i, _) in files.items()}
            msk = {n: Path(m) for n, (_, m) in files.items()}
        else:
            img = {p.stem: p for p in sorted(Path(images).iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
            msk = {p.stem: p for p in sorted(Path(masks).iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
        self.names = names or sorted(set(img) & set(msk))
        if not self.names:
            raise GeosegError("no image has a mask with the same name", masks)
        self.images, self.masks = img, msk
        self.ignore = ignore_index
        self.mean = None if mean is None else np.asarray(mean, np.float32)[:, None, None]
        self.std = None if std is None else np.asarray(std, np.float32)[:, None, None]
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def image_dtype(self) -> str | None:
        """The data type of the chips as stored (uint8 for PNG and JPEG)."""
        from PIL import Image

        if not self.names:
            return None
        return str(np.asarray(Image.open(self.images[self.names[0]])).dtype)

    def load(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        from PIL import Image

        im = np.asarray(Image.open(self.images[name]))
        im = im[None] if im.ndim == 2 else np.moveaxis(im, -1, 0)
        try:
            im = im[[b - 1 for b in self.cfg.bands]]
        except IndexError:
            raise GeosegError(f"has {im.shape[0]} bands, fewer than bands {list(self.cfg.bands)}",
                              self.images[name]) from None
        m = np.asarray(Image.open(self.masks[name]))  # palette images give indexes
        if self.lut is not None:
            return im.astype(np.float32), self.lut[m].astype(np.int64)
        m = m.astype(np.int64)
        m[m == self.ignore] = NODATA
        return im.astype(np.float32), m

    def __len__(self) -> int:
        return self.cfg.sampling.chips_per_epoch

    def __getitem__(self, i: int):
        rng = np.random.default_rng([self.cfg.train.seed, self.epoch, i])
        im, m = self.load(self.names[int(rng.integers(len(self.names)))])
        c = self.cfg.model.chip_size
        f, angle, side = draw_warp(self.cfg.augment, rng, c)
        ph, pw = max(0, side - im.shape[1]), max(0, side - im.shape[2])
        if ph or pw:
            im = np.pad(im, [(0, 0), (0, ph), (0, pw)])
            m = np.pad(m, [(0, ph), (0, pw)], constant_values=NODATA)
        y = int(rng.integers(0, im.shape[1] - side + 1))
        x = int(rng.integers(0, im.shape[2] - side + 1))
        im, m = im[:, y : y + side, x : x + side], m[y : y + side, x : x + side]
        im = (im - self.mean) / self.std
        if side != c:
            im = warp(im, f, angle, c, order=1)
            m = warp(m[None], f, angle, c, order=0, cval=NODATA)[0]
        im, m = augment(im, m, self.cfg.augment, rng)
        return torch.from_numpy(im), torch.from_numpy(m)

    def statistics(self) -> tuple[tuple, tuple]:
        n, s, ss = 0, 0.0, 0.0
        for name in self.names:
            im, _ = self.load(name)
            px = im.reshape(im.shape[0], -1).astype(np.float64)
            n += px.shape[1]
            s = s + px.sum(1)
            ss = ss + np.square(px).sum(1)
        mean = s / n
        return tuple(map(float, mean)), tuple(float(max(v, 1e-6)) for v in np.sqrt(np.maximum(ss / n - mean**2, 0)))


__all__ = ["ChipFolder", "SceneChips", "band_statistics", "chip_object_targets", "open_scene", "split_blocks"]
