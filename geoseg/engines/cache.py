"""Converted models, once per bundle weights, engine and input shape.

A per-user cache (``$GEOSEG_CACHE_DIR``, else ``$XDG_CACHE_HOME/geoseg``, else ``~/.cache/geoseg``)
keyed by the SHA-256 of the bundle's ``model.safetensors``: new weights never meet an old
conversion. ``geoseg model compile`` writes the same files into ``BUNDLE/engines/`` instead, which
is read first (a read-only bundle is never written otherwise). Files appear under temporary names
and are renamed into place, so concurrent workers never read half a file.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

_HASHES: dict[tuple, str] = {}
_LOCK = threading.Lock()


def cache_root() -> Path:
    if os.environ.get("GEOSEG_CACHE_DIR"):
        return Path(os.environ["GEOSEG_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "geoseg"


def weights_hash(bundle: Path) -> str:
    w = Path(bundle) / "model.safetensors"
    st = w.stat()
    key = (str(w.resolve()), st.st_mtime_ns, st.st_size)
    with _LOCK:
        if key not in _HASHES:
            h = hashlib.sha256()
            with open(w, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            _HASHES[key] = h.hexdigest()
        return _HASHES[key]


def artifact_name(engine: str, tile: int, channels: int, precision: str = "fp32") -> str:
    # OpenVINO's conversion takes one tile at a time (a static shape; see runtime.OpenVINORunner), ONNX any batch.
    # bf16 and fp16 are compile-time hints over the fp32 conversion; int8 is its own, quantized model, calibrated
    # once for any tile size (reshaped when compiled).
    if engine == "openvino" and precision == "int8":
        return f"openvino-int8-{channels}band.xml"
    if engine == "openvino":
        return f"openvino-1x{tile}x{tile}x{channels}.xml"
    return f"{engine}-{tile}x{tile}x{channels}.onnx"


def find(bundle: Path, engine: str, tile: int, channels: int, precision: str = "fp32") -> Path:
    """Where the conversion is (or goes): beside the bundle if compiled there, else the user cache."""
    name = artifact_name(engine, tile, channels, precision)
    beside = Path(bundle) / "engines" / weights_hash(bundle)[:16] / name
    if beside.exists():
        return beside
    return cache_root() / "engines" / weights_hash(bundle) / name
