"""Reading benchmark label images (PNG masks) with one clear line per problem."""

from __future__ import annotations

import numpy as np

from geoseg.errors import GeosegError

LUT_SIZE = 1 << 16  # look-up tables cover every 8- and 16-bit label value


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def read_labels(path: str, role: str) -> np.ndarray:
    """A single-band label image as an integer array (palette PNGs give their indices, not colours).

    One-band 8- and 16-bit PNGs, the label images of every benchmark, are read by ``png_labels``;
    anything else, and any file it cannot read, goes through Pillow, whose message a user sees.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        arr = png_labels(path)
        if arr is not None:
            return arr
        with Image.open(path) as img:
            mode = img.mode
            arr = np.asarray(img)
    except FileNotFoundError:
        raise GeosegError(f"{role} not found", path) from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise GeosegError(f"cannot read the {role} image ({exc.__class__.__name__}: {exc})", path) from None
    if arr.ndim != 2:
        raise GeosegError(f"the {role} has {arr.shape[2] if arr.ndim == 3 else arr.ndim} channels (mode {mode}); "
                          "labels must be one band: a palette (P) or grey (L / I;16) PNG", path)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if not np.issubdtype(arr.dtype, np.integer):
        raise GeosegError(f"the {role} holds {arr.dtype} values; labels must be integers", path)
    if arr.dtype.itemsize > 2 and arr.size and (arr.min() < 0 or arr.max() >= LUT_SIZE):
        raise GeosegError(f"the {role} holds values outside 0..{LUT_SIZE - 1}", path)
    return arr


def png_labels(path) -> np.ndarray | None:
    """A grey (8- or 16-bit) or palette (8-bit) non-interlaced PNG's values, or None for any other file.

    Why not Pillow for these: on a 2048 x 1024 label image Pillow spends 2.5x the time of inflating
    its data, and Cityscapes scoring reads three such images per frame. Here the chunks are split in
    Python, the stream is inflated by libdeflate (the ``deflate`` package; the standard library's
    zlib without it), which checks the stream's Adler-32, and the rows are reconstructed by a compiled
    kernel without the GIL. A file that is not such a PNG, or fails any check, returns None, and
    Pillow reads it (or says what is wrong with it).
    """
    return _png(path, rgb=False)


def png_rgb(path) -> np.ndarray | None:
    """An 8-bit RGB non-interlaced PNG's pixels as a (height, width, 3) array (the COCO panoptic segment
    images), read as :func:`png_labels` reads label images; None for any other file."""
    return _png(path, rgb=True)


def _png(path, rgb: bool) -> np.ndarray | None:
    from geoseg.benchmarks._png_ext import png_unfilter

    with open(path, "rb") as f:
        data = f.read()
    if not data.startswith(PNG_SIGNATURE):
        return None
    view, pos, header, stream = memoryview(data), 8, None, []
    while pos + 8 <= len(data):
        size, kind = int.from_bytes(data[pos:pos + 4], "big"), data[pos + 4:pos + 8]
        if pos + 12 + size > len(data):
            return None  # truncated
        if kind == b"IHDR":
            header = data[pos + 8:pos + 8 + size]
        elif kind == b"IDAT":
            stream.append(view[pos + 8:pos + 8 + size])
        elif kind == b"IEND":
            break
        pos += 12 + size
    if header is None or len(header) != 13 or not stream:
        return None
    width, height = int.from_bytes(header[0:4], "big"), int.from_bytes(header[4:8], "big")
    depth, colour, compression, filtering, interlace = header[8:13]
    if rgb:
        if colour != 2 or depth != 8:
            return None
    elif colour not in (0, 3) or depth not in (8, 16) or (colour == 3 and depth != 8):
        return None
    if compression or filtering or interlace or not width or not height:
        return None
    bpp = 3 if rgb else depth // 8
    try:
        buf = _inflate(b"".join(stream), height * (width * bpp + 1))
        png_unfilter(buf, height, width * bpp, bpp, depth == 16)  # in place: one image-sized allocation
    except Exception:  # noqa: BLE001 - any broken stream: Pillow reads it and names the problem
        return None
    out = np.frombuffer(buf, dtype=np.uint8, count=height * width * bpp).reshape(height, width * bpp)
    if rgb:
        return out.reshape(height, width, 3)
    return out.view("<u2") if depth == 16 else out


def _inflate(stream: bytes, size: int) -> bytearray:
    try:
        import deflate
    except ImportError:
        import zlib

        return bytearray(zlib.decompress(stream, bufsize=size))
    return deflate.zlib_decompress(stream, size)  # a bytearray: written in place by png_unfilter


def check_same_size(pred: np.ndarray, ref: np.ndarray, prediction: str, reference: str) -> None:
    if pred.shape != ref.shape:
        raise GeosegError(f"is {pred.shape[1]}x{pred.shape[0]} px but its ground truth {reference} is "
                          f"{ref.shape[1]}x{ref.shape[0]} px", prediction)


def few(values, n: int = 8) -> str:
    values = [int(v) for v in values]
    head = ", ".join(str(v) for v in values[:n])
    return head + (f" and {len(values) - n} more" if len(values) > n else "")


def check_values(arr: np.ndarray, allowed: np.ndarray, path: str, what: str) -> None:
    """Fail with the offending values listed when ``arr`` holds values not flagged in ``allowed`` (a LUT of bools)."""
    present = np.flatnonzero(np.bincount(arr.ravel().astype(np.int64), minlength=1)) if arr.size else []
    bad = [v for v in present if v >= len(allowed) or not allowed[v]]
    if bad:
        raise GeosegError(f"label values outside the class table: {few(bad)} ({what})", path)


def write_png(path, arr: np.ndarray, palette: np.ndarray | None = None) -> None:
    """A one-band PNG (``mode P`` with ``palette``, else ``L`` or ``I;16``), written under a temporary name first."""
    import os
    from pathlib import Path

    from PIL import Image

    from geoseg.io.output import tmp_name

    final = Path(path)
    if palette is not None:
        img = Image.frombytes("P", (arr.shape[1], arr.shape[0]), np.ascontiguousarray(arr, dtype=np.uint8).tobytes())
        img.putpalette(np.asarray(palette, dtype=np.uint8).ravel().tolist())
    else:
        img = Image.fromarray(arr.astype(np.uint16 if arr.max(initial=0) > 255 else np.uint8))
    tmp = tmp_name(final, "png")
    try:
        img.save(tmp, format="PNG")
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
