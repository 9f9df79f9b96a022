"""A scene's finished prediction chunks on disk, so that a killed predict resumes where it stopped.

Each finished chunk is saved as one file (``chunk-I-J.npz``: its classes, its
probabilities when asked for, the vote strips it hands to the blocks below
and to its right, and the objects its tiles own when the model decodes objects), written under a temporary name, flushed to disk and
renamed: a chunk file that exists is complete, whatever killed the process
(``kill -9``, node loss, walltime). A re-run computes only the missing chunks;
the neighbours of a finished chunk take its strips from its file, so the votes
every pixel gets, and therefore the output, are the same bit for bit as in an
uninterrupted run.

The store's folder name carries a key of everything the chunks depend on (the
scene's identity, the model's weights, tiling, blend, engine, precision): a
store of other settings is never reused. It is removed when the scene's COG is
in place.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from pathlib import Path

import numpy as np

from geoseg.errors import GeosegError
from geoseg.io.output import clean_stale, tmp_name

log = logging.getLogger("geoseg")
_ARRAYS = ("classes", "probabilities", "bottom", "right", "piece_table", "piece_masks")


def store_key(parts: dict) -> str:
    """A short hash of a JSON-able description of what the chunks depend on."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def saved_chunks(folder: Path) -> set[tuple[int, int]]:
    """The ``(i, j)`` of the chunks saved in a store's folder, read without touching it."""
    out = set()
    for p in Path(folder).glob("chunk-*-*.npz"):
        i, j = p.stem.split("-")[1:]
        out.add((int(i), int(j)))
    return out


class ChunkStore:
    """One scene's finished chunks, one file each, in ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise GeosegError(f"cannot create the checkpoint folder ({exc.strerror or exc})", self.folder) from None
        clean_stale(self.folder)  # a killed run's half-saved chunk

    def path(self, i: int, j: int) -> Path:
        return self.folder / f"chunk-{i}-{j}.npz"

    def done(self) -> set[tuple[int, int]]:
        """The chunks saved by earlier (killed) runs."""
        return saved_chunks(self.folder)

    def save(self, i: int, j: int, result) -> None:
        """Save a finished chunk (a ``BlockResult``); the file appears whole or not at all."""
        final = self.path(i, j)
        tmp = tmp_name(final, "npz")
        arrays = {k: getattr(result, k) for k in _ARRAYS if getattr(result, k) is not None}
        try:
            with open(tmp, "wb") as f:
                np.savez(f, n_tiles=np.int64(result.n_tiles), **arrays)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise GeosegError(f"cannot save a checkpoint chunk ({exc.strerror or exc})", final) from None

    def load(self, i: int, j: int, names: tuple[str, ...] = _ARRAYS) -> dict:
        """The arrays of a saved chunk (only ``names``; absent ones are None)."""
        path = self.path(i, j)
        try:
            with np.load(path) as z:
                out = {k: (z[k] if k in z.files else None) for k in names}
                out["n_tiles"] = int(z["n_tiles"])
        except (OSError, ValueError, KeyError) as exc:
            raise GeosegError(f"a checkpoint chunk is unreadable ({exc}); delete the folder to start over",
                              path) from None
        return out

    def remove(self) -> None:
        """Remove this store, and the scene's stores of other settings that killed runs left behind."""
        mine = re.compile(re.escape(self.folder.name.rsplit("-", 1)[0]) + r"-[0-9a-f]{16}")
        for old in self.folder.parent.iterdir():
            if old.is_dir() and mine.fullmatch(old.name):
                shutil.rmtree(old, ignore_errors=True)
        try:
            self.folder.parent.rmdir()  # the checkpoint root, once its last store is gone
        except OSError:
            pass
