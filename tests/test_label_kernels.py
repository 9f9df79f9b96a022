"""The compiled label kernels (``geoseg/benchmarks/_png_ext.pyx``, ``geoseg/evaluation/_counts_ext.pyx``) against references: Pillow for PNG decoding,
numpy for the pixel counts."""

from __future__ import annotations

import struct
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from geoseg.evaluation._counts_ext import coded_histogram, instance_counts, pair_runs
from PIL import Image

from geoseg.benchmarks.images import png_labels, png_rgb, read_labels
from geoseg.errors import GeosegError
from geoseg.evaluation.metrics import coded_confusion


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))


def encode_png(arr: np.ndarray, colour: int, depth: int, filters) -> bytes:
    """A PNG written here with a chosen filter per row (Pillow picks its own), its data split over two IDATs."""
    h, w = arr.shape[:2]
    bpp = depth // 8 * (3 if colour == 2 else 1)
    raw = arr.astype(">u2").view(np.uint8).reshape(h, w * 2) if depth == 16 else arr.astype(np.uint8).reshape(h, -1)
    prev = np.zeros(w * bpp, np.int32)
    rows = []
    for y in range(h):
        cur = raw[y].astype(np.int32)
        left = np.r_[np.zeros(bpp, np.int32), cur[:-bpp]]
        upleft = np.r_[np.zeros(bpp, np.int32), prev[:-bpp]]
        f = filters[y % len(filters)]
        out = {0: cur, 1: cur - left, 2: cur - prev, 3: cur - (left + prev) // 2,
               4: cur - _paeth(left, prev, upleft)}[f]
        rows.append(bytes([f]) + (out % 256).astype(np.uint8).tobytes())
        prev = cur
    data = zlib.compress(b"".join(rows), 6)
    half = len(data) // 2
    png = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, colour, 0, 0, 0))
    if colour == 3:
        png += _chunk(b"PLTE", bytes(np.arange(256 * 3, dtype=np.uint8) % 251))
    return png + _chunk(b"IDAT", data[:half]) + _chunk(b"IDAT", data[half:]) + _chunk(b"IEND", b"")


def labels_like(shape, depth: int, seed: int, flat: bool = False) -> np.ndarray:
    """Label-like content over the type's whole range: blocks of values with noise, or (``flat``) rows of long
    runs, many of them repeating the row above (the flat stretches the row reconstruction skips through)."""
    rng = np.random.default_rng(seed)
    top = 65535 if depth == 16 else 255
    if flat:
        arr = np.zeros(shape, np.int64)
        for y in range(shape[0]):
            if y and rng.random() < 0.5:
                arr[y] = arr[y - 1]
            else:
                lengths = rng.integers(1, 30, shape[1])
                arr[y] = np.repeat(rng.integers(0, top + 1, shape[1]), lengths)[:shape[1]]
        return arr.astype(np.uint16 if depth == 16 else np.uint8)
    arr = np.repeat(np.repeat(rng.integers(0, top + 1, (shape[0] // 3 + 1, shape[1] // 5 + 1)), 3, 0), 5, 1)
    arr = arr[:shape[0], :shape[1]].copy()
    noise = rng.random(shape) < 0.1
    arr[noise] = rng.integers(0, top + 1, noise.sum())
    return arr.astype(np.uint16 if depth == 16 else np.uint8)


@pytest.mark.parametrize("colour,depth", [(0, 8), (0, 16), (3, 8)])
@pytest.mark.parametrize("filters", [[0], [1], [2], [3], [4], [4, 1, 3, 0, 2, 4, 2]])
@pytest.mark.parametrize("shape,flat", [((37, 53), False), ((41, 203), True), ((1, 9), False), ((6, 1), False)])
def test_png_rows_reconstructed_as_pillow_reads_them(tmp_path, colour, depth, filters, shape, flat):
    arr = labels_like(shape, depth, seed=len(filters) * 7 + depth + shape[0], flat=flat)
    path = tmp_path / "x.png"
    path.write_bytes(encode_png(arr, colour, depth, filters))
    with Image.open(path) as img:
        want = np.asarray(img)
    np.testing.assert_array_equal(want, arr)  # the encoder here is right
    got = png_labels(path)
    assert got is not None and got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(read_labels(str(path), "ground truth"), want)


@pytest.mark.parametrize("filters", [[0], [1], [2], [3], [4], [4, 1, 3, 0, 2, 4, 2]])
@pytest.mark.parametrize("shape,flat", [((37, 53), False), ((41, 203), True), ((1, 9), False), ((6, 1), False)])
def test_rgb_png_rows_reconstructed_as_pillow_reads_them(tmp_path, filters, shape, flat):
    """RGB PNGs (COCO panoptic segment images): three bytes a pixel, every filter type."""
    planes = [labels_like(shape, 8, seed=len(filters) * 5 + k + shape[0], flat=flat) for k in range(3)]
    arr = np.stack(planes, axis=-1)
    path = tmp_path / "x.png"
    path.write_bytes(encode_png(arr, 2, 8, filters))
    with Image.open(path) as img:
        want = np.asarray(img)
    np.testing.assert_array_equal(want, arr)
    got = png_rgb(path)
    assert got is not None and got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    assert png_labels(path) is None and png_rgb(tmp_path / "x.png") is not None


def test_pillow_written_labels_read_alike_on_threads(tmp_path):
    arrays = [labels_like((301, 517), 8, s, flat=s % 2) for s in range(4)] + \
        [labels_like((211, 333), 16, s, flat=s % 2) for s in range(4)]
    paths = []
    for i, a in enumerate(arrays):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(a).save(paths[-1])
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(png_labels, paths * 3))
    for p, g in zip(paths * 3, got):
        with Image.open(p) as img:
            np.testing.assert_array_equal(g, np.asarray(img))


def test_other_images_go_through_pillow(tmp_path):
    """RGB, 1-bit and interlaced PNGs are not read here; read_labels still reads the ones that are labels."""
    rgb = tmp_path / "rgb.png"
    Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(rgb)
    one_bit = tmp_path / "bits.png"
    Image.fromarray(np.eye(8, dtype=bool)).save(one_bit)
    laced = tmp_path / "laced.png"
    Image.fromarray(labels_like((40, 30), 8, 1)).save(laced, interlace=1)  # Pillow may not interlace: either way
    for p in (rgb, one_bit, laced):
        if p is not laced:
            assert png_labels(p) is None
        with Image.open(p) as img:
            want = np.asarray(img)
        if want.ndim == 2:
            np.testing.assert_array_equal(read_labels(str(p), "prediction"), want.astype(np.uint8))
    with pytest.raises(GeosegError, match="3 channels"):
        read_labels(str(rgb), "prediction")


def test_broken_png_gets_pillows_line(tmp_path):
    good = encode_png(labels_like((30, 40), 8, 2), 0, 8, [2])
    cut = tmp_path / "cut.png"
    cut.write_bytes(good[:len(good) - 30])  # the second IDAT and IEND lost
    assert png_labels(cut) is None
    with pytest.raises(GeosegError, match="cannot read the ground truth image"):
        read_labels(str(cut), "ground truth")
    flipped = tmp_path / "filter.png"
    body = zlib.compress(bytes([7]) + bytes(40) + b"".join(bytes([0]) + bytes(40) for _ in range(29)))
    flipped.write_bytes(good[:33] + _chunk(b"IDAT", body) + _chunk(b"IEND", b""))
    assert png_labels(flipped) is None  # filter type 7 does not exist


@pytest.mark.parametrize("ref_type,pred_type", [(np.uint8, np.uint8), (np.uint16, np.uint8), (np.uint8, np.uint16)])
def test_coded_histogram_equals_numpy(ref_type, pred_type):
    rng = np.random.default_rng(5)
    k = 6
    ref = rng.integers(0, 40, 100_003).astype(ref_type)
    pred = rng.integers(0, 40, 100_003).astype(pred_type)
    rows = np.full(65536, k + 1, np.uint16)
    rows[:8] = [0, 1, 2, 3, 4, 5, k, k]  # 6 and 7 ignored; the rest illegal
    cols = np.full(65536, k, np.uint16)
    cols[:6] = np.arange(6)
    want = np.bincount(rows[ref].astype(np.int64) * (k + 1) + cols[pred], minlength=(k + 2) * (k + 1))
    got = coded_histogram(ref, pred, rows, cols, k)
    np.testing.assert_array_equal(got.ravel(), want)
    cm, bad_ref, bad_pred, _ = coded_confusion(ref, pred, rows, cols, k)
    assert bad_ref == int((rows[ref] == k + 1).sum()) and bad_pred == int((cols[pred] == k).sum())
    np.testing.assert_array_equal(cm, want.reshape(k + 2, k + 1)[:k, :k])


def test_coded_confusion_takes_any_integer_labels():
    ref = np.array([[0, 1], [2, 70000]], np.int64)
    rows = np.zeros(65536, np.uint16)
    with pytest.raises(ValueError, match="0..65535"):
        coded_confusion(ref, ref, rows, rows, 1)
    ref[1, 1] = 3
    cm, *_ = coded_confusion(ref.astype(np.int32), ref, np.arange(65536, dtype=np.uint16) % 5,
                             np.arange(65536, dtype=np.uint16) % 4, 4)
    np.testing.assert_array_equal(np.diag(cm), [1, 1, 1, 1])


def test_instance_counts_equal_numpy():
    rng = np.random.default_rng(9)
    n = 200_000
    inst = rng.choice([0, 7, 1000, 24001, 24002, 26005, 26006, 33001, 40001], n).astype(np.uint16)
    pred = rng.choice([0, 7, 24, 25, 26, 27, 33, 200], n).astype(np.uint8)
    table = np.zeros((34, 65536), np.uint8)
    table[24, [24, 25]] = table[25, [24, 25]] = 1
    table[26, [26, 27, 33]] = table[33, [26, 27, 33]] = 1
    size, hit, cat = instance_counts(inst, pred, table, 1000)
    m = inst > 1000
    ids, p = inst[m].astype(np.int64), pred[m].astype(np.int64)
    lab = ids // 1000
    np.testing.assert_array_equal(size, np.bincount(ids, minlength=65536))
    np.testing.assert_array_equal(hit, np.bincount(ids, weights=p == lab, minlength=65536))
    np.testing.assert_array_equal(cat, np.bincount(ids, weights=table[np.minimum(lab, 33), p], minlength=65536))
    assert size[1000] == 0 and size[40001] == (inst == 40001).sum()  # 1000 itself is not an instance id


def runs(rng, values, n: int) -> np.ndarray:
    """Runs of 1 to 40 equal values: blocks of 8 that are uniform, and blocks that are not."""
    lengths = rng.integers(1, 41, n)
    return np.repeat(rng.choice(values, len(lengths)), lengths)[:n]


@pytest.mark.parametrize("n", [100_000, 100_003, 7])
def test_counters_on_runs_equal_numpy(n):
    """The uniform-block shortcut of both counters: runs in one image only, in both, and a tail past the blocks."""
    rng = np.random.default_rng(n)
    k = 5
    rows = (np.arange(65536) % (k + 2)).astype(np.uint16)
    cols = (np.arange(65536) % (k + 1)).astype(np.uint16)
    table = (rng.random((34, 65536)) < 0.3).astype(np.uint8)
    for ref, pred in [(runs(rng, np.arange(30), n), runs(rng, np.arange(30), n)),
                      (runs(rng, np.arange(30), n), rng.integers(0, 30, n)),
                      (np.full(n, 3), runs(rng, np.arange(30), n))]:
        ref, pred = ref.astype(np.uint8), pred.astype(np.uint8)
        want = np.bincount(rows[ref].astype(np.int64) * (k + 1) + cols[pred], minlength=(k + 2) * (k + 1))
        np.testing.assert_array_equal(coded_histogram(ref, pred, rows, cols, k).ravel(), want)
        np.testing.assert_array_equal(coded_histogram(ref.astype(np.uint16), pred, rows, cols, k).ravel(), want)
        inst = runs(rng, [0, 7, 1000, 24001, 26003, 26004, 40002], n).astype(np.uint16)
        size, hit, cat = instance_counts(inst, pred, table, 1000)
        m = inst > 1000
        ids, p = inst[m].astype(np.int64), pred[m].astype(np.int64)
        np.testing.assert_array_equal(size, np.bincount(ids, minlength=65536))
        np.testing.assert_array_equal(hit, np.bincount(ids, weights=p == ids // 1000, minlength=65536))
        np.testing.assert_array_equal(cat, np.bincount(ids, weights=table[np.minimum(ids // 1000, 33), p],
                                                       minlength=65536))


def test_every_png_of_the_shared_data_reads_as_pillow_reads_it(shared_data):
    """Real label images (VOC palette masks, Cityscapes labelIds / trainIds / 16-bit instanceIds) and the rest:
    the ones read here equal Pillow's values; the others (RGB photographs) are left to Pillow."""
    read_here = 0
    for path in sorted(shared_data.rglob("*.png")):
        got = png_labels(path)
        with Image.open(path) as img:
            want = np.asarray(img)
        if got is None:
            assert want.ndim == 3 or img.mode not in ("L", "P", "I;16"), path
            continue
        read_here += 1
        assert got.dtype == want.dtype, path
        np.testing.assert_array_equal(got, want, err_msg=str(path))
    assert read_here >= 12


@pytest.mark.parametrize("dtype", [np.uint32, np.uint64])
@pytest.mark.parametrize("n", [0, 1, 2, 7, 5000, 300_000])
def test_pair_runs_equal_numpy(dtype, n):
    """Runs of (a, b) pairs: expanded back they are the two images; summed per pair they are np.unique's counts."""
    rng = np.random.default_rng(n)
    a = runs(rng, [0, 1, 2, 2**31 + 5], n).astype(dtype)
    b = runs(rng, [0, 3, 9], n).astype(dtype)
    if dtype == np.uint64:
        a[: n // 3] += np.uint64(1 << 40)
    ra, rb, rn = pair_runs(a, b)
    np.testing.assert_array_equal(np.repeat(ra, rn), a)
    np.testing.assert_array_equal(np.repeat(rb, rn), b)
    assert (rn > 0).all() and (len(rn) < 2 or ((ra[1:] != ra[:-1]) | (rb[1:] != rb[:-1])).all())
