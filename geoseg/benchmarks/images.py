"""Reading benchmark label images (PNG masks) with one clear line per problem."""

from __future__ import annotations

import numpy as np

from geoseg.errors import GeosegError

LUT_SIZE = 1 << 16  # look-up tables cover every 8- and 16-bit label value


def read_labels(path: str, role: str) -> np.ndarray:
    """A single-band label image as an integer array (palette PNGs give their indices, not colours)."""
    from PIL import Image, UnidentifiedImageError

    try:
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

    from geoseg.output import tmp_name

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
