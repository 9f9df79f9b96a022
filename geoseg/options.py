"""The numeric options that commands share, validated in one place.

Every command's options dataclass calls :func:`check_options` from its
``__post_init__``, so ``--chunk-size 0`` is refused by predict, vectorize and
evaluate alike (a one-pixel chunk grid would run for hours), and no zero is
silently replaced by a default.
"""

from __future__ import annotations

from geoseg.errors import GeosegError

POSITIVE = ("tile_size", "chunk_size", "workers", "batch_size", "grid_size", "resolution")
NON_NEGATIVE = ("overlap", "min_area", "fill_holes", "simplify", "min_reference_px")


def check_options(options: object) -> None:
    """Refuse zero or negative values of the shared numeric options an options object has (``None``: default)."""
    for name in POSITIVE + NON_NEGATIVE:
        value = getattr(options, name, None)
        if value is None:
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise GeosegError(f"{flag} must be a number, got {value!r}")
        if name in POSITIVE and not value > 0:
            raise GeosegError(f"{flag} must be positive, got {value}")
        if name in NON_NEGATIVE and not value >= 0:
            raise GeosegError(f"{flag} must not be negative, got {value}")
    threshold = getattr(options, "iou_threshold", None)
    if threshold is not None and not 0 < threshold <= 1:
        raise GeosegError(f"--iou-threshold must be in (0, 1], got {threshold}")
