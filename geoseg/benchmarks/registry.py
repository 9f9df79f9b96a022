"""The benchmark adapters, keyed by lowercase name (the same registry idiom as architectures and blend modes)."""

from __future__ import annotations

from geoseg.errors import GeosegError

_ADAPTERS: dict[str, object] = {}


def register(adapter):
    """Add an adapter (an object with ``name``, ``summary``, ``layout`` and ``conventions``)."""
    _ADAPTERS[adapter.name] = adapter
    return adapter


def names() -> list[str]:
    return sorted(_ADAPTERS)


def get(name: str):
    """The adapter called ``name``; an unknown name fails with the list of valid ones."""
    try:
        return _ADAPTERS[str(name).lower()]
    except KeyError:
        raise GeosegError(f"unknown benchmark adapter {name!r} (valid: {', '.join(names())})") from None
