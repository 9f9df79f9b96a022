"""The run ledger: what ran, on what, with which settings, and how it ended.

A SQLite file in the run folder (``ledger.sqlite``). Every change is one
transaction, so a killed run leaves the ledger as it was after its last
finished change. One row per attempt of a step on a scene: the input's
identity (path, size, mtime, content hash), the step's config hash and key
(which also covers the steps it depends on), geoseg's version, status,
timings, outputs, chunk counts and the error line. The latest row of a
scene and step decides whether it is done.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from geoseg.errors import GeosegError

LEDGER = "ledger.sqlite"
FULL_HASH_BELOW = 64 << 20  # files smaller than this are hashed whole
SAMPLE = 1 << 16  # else: the header and 16 pieces of this size spread over the file

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY, started REAL, finished REAL, status TEXT, pid INTEGER, host TEXT,
    version TEXT, workflow TEXT, cluster TEXT, dashboard TEXT, summary TEXT);
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY, run INTEGER REFERENCES runs(id), scene TEXT, step TEXT, key TEXT,
    input TEXT, input_hash TEXT, config TEXT, upstream TEXT, version TEXT, status TEXT, started REAL,
    finished REAL, outputs TEXT, error TEXT, chunks INTEGER, chunks_resumed INTEGER, reason TEXT);
CREATE INDEX IF NOT EXISTS items_scene_step ON items(scene, step, id);
"""


def content_hash(path: str | os.PathLike) -> str:
    """SHA-256 of the whole file when small, else of its size, header and 16 evenly spread pieces."""
    size = os.path.getsize(path)
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        if size < FULL_HASH_BELOW:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        else:
            h.update(f.read(SAMPLE))
            for k in range(16):
                f.seek((size - SAMPLE) * (k + 1) // 16)
                h.update(f.read(SAMPLE))
    return h.hexdigest()


def identity(path: str | os.PathLike, known: dict | None = None) -> dict:
    """Path, size, mtime and content hash; the hash of ``known`` (the last run's identity) is reused
    when path, size and mtime are unchanged, so an unchanged folder is not read again."""
    st = os.stat(path)
    ident = {"path": os.path.realpath(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    if known and all(known.get(k) == v for k, v in ident.items()) and known.get("hash"):
        return dict(ident, hash=known["hash"])
    return dict(ident, hash=content_hash(path))


def config_hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class Record:
    id: int
    run: int
    scene: str
    step: str
    key: str
    input_hash: str
    config: str
    upstream: str
    version: str
    status: str
    started: float | None
    finished: float | None
    outputs: list[str]
    error: str | None
    chunks: int | None
    chunks_resumed: int | None
    reason: str | None

    @property
    def seconds(self) -> float | None:
        return None if self.started is None or self.finished is None else self.finished - self.started


class Ledger:
    """The ledger of one run folder (thread-safe: one connection, one lock)."""

    def __init__(self, folder: Path, create: bool = True) -> None:
        self.path = Path(folder) / LEDGER
        if not create and not self.path.is_file():
            raise GeosegError(f"no run ledger here ({LEDGER}): not a geoseg run folder", folder)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
            with self._db:
                self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise GeosegError(f"cannot open the run ledger ({exc})", self.path) from None

    def close(self) -> None:
        self._db.close()

    def _write(self, sql: str, args: tuple) -> int:
        with self._lock:
            try:
                with self._db:  # one transaction
                    return self._db.execute(sql, args).lastrowid
            except sqlite3.Error as exc:
                raise GeosegError(f"cannot write the run ledger ({exc})", self.path) from None

    # -- runs ---------------------------------------------------------------------------------------------
    def start_run(self, version: str, workflow: str, cluster: str) -> int:
        return self._write("INSERT INTO runs (started, status, pid, host, version, workflow, cluster) "
                           "VALUES (?, 'running', ?, ?, ?, ?, ?)",
                           (time.time(), os.getpid(), socket.gethostname(), version, workflow, cluster))

    def set_dashboard(self, run: int, address: str | None) -> None:
        self._write("UPDATE runs SET dashboard = ? WHERE id = ?", (address, run))

    def finish_run(self, run: int, status: str, summary: dict) -> None:
        self._write("UPDATE runs SET finished = ?, status = ?, summary = ? WHERE id = ?",
                    (time.time(), status, json.dumps(summary), run))

    def runs(self) -> list[dict]:
        with self._lock:
            cur = self._db.execute("SELECT * FROM runs ORDER BY id")
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row)) for row in cur.fetchall()]

    # -- items --------------------------------------------------------------------------------------------
    def start_item(self, run: int, scene: str, step: str, key: str, ident: dict, config: str, upstream: str,
                   version: str, reason: str) -> int:
        return self._write(
            "INSERT INTO items (run, scene, step, key, input, input_hash, config, upstream, version, status, "
            "started, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'running', ?, ?)",
            (run, scene, step, key, json.dumps(ident), ident["hash"], config, upstream, version, time.time(),
             reason))

    def finish_item(self, item: int, status: str, outputs: list[str] = (), error: str | None = None,
                    chunks: int | None = None, chunks_resumed: int | None = None) -> None:
        self._write("UPDATE items SET status = ?, finished = ?, outputs = ?, error = ?, chunks = ?, "
                    "chunks_resumed = ? WHERE id = ?",
                    (status, time.time(), json.dumps([os.fspath(o) for o in outputs]), error, chunks,
                     chunks_resumed, item))

    def latest(self) -> dict[tuple[str, str], Record]:
        """The latest attempt of every (scene, step)."""
        with self._lock:
            cur = self._db.execute(
                "SELECT id, run, scene, step, key, input_hash, config, upstream, version, status, started, "
                "finished, outputs, error, chunks, chunks_resumed, reason FROM items WHERE id IN "
                "(SELECT max(id) FROM items GROUP BY scene, step)")
            rows = cur.fetchall()
        out = {}
        for r in rows:
            rec = Record(*r[:12], json.loads(r[12] or "[]"), *r[13:])
            out[(rec.scene, rec.step)] = rec
        return out

    def identities(self) -> dict[str, dict]:
        """The identity each scene had when a step last ran on it."""
        with self._lock:
            rows = self._db.execute("SELECT scene, input FROM items WHERE id IN "
                                    "(SELECT max(id) FROM items GROUP BY scene)").fetchall()
        return {scene: json.loads(ident) for scene, ident in rows if ident}
