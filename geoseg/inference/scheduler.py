"""Choosing where Dask runs: local threads, a local cluster, or an existing one.

``--scheduler`` takes ``threads`` (the default: Dask's threaded scheduler in
this process), ``sync`` (one thread, for debugging), ``local`` (a
``distributed.LocalCluster`` of ``--workers`` processes), or the address of a
running ``dask.distributed`` scheduler such as ``tcp://host:8786``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from geoseg.errors import GeosegError

LOCAL_SCHEDULERS = ("threads", "sync")


@dataclass
class Runner:
    """Either a local Dask scheduler name or a ``distributed.Client``."""

    scheduler: str
    workers: int
    client: object | None = None
    model_resources: dict | None = None  # Dask resources each model task needs (``{"GPU": 1}``)

    @property
    def distributed(self) -> bool:
        return self.client is not None

    @property
    def torch_threads(self) -> int:
        """Intra-op threads per worker, so that workers do not oversubscribe the cores.

        Two Dask threads each driving an OpenMP team of every core run slower than
        the same threads with one core's worth each (OpenMP's spinning teams
        fight over the cores); the workers are the parallelism.
        """
        return max(1, (os.cpu_count() or 1) // max(1, self.workers))

    @property
    def engine_streams(self) -> int:
        """How many threads of one process call the engine at once: the Dask threads, or one per process."""
        return self.workers if self.scheduler == "threads" else 1


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


@contextlib.contextmanager
def open_runner(scheduler: str | None = None, workers: int | None = None, client: object | None = None,
                resources: dict | None = None) -> Iterator[Runner]:
    """Yield a :class:`Runner`; clusters started here are closed afterwards.

    ``resources``: what each model task needs on a cluster; by default ``{"GPU": 1}``
    when a worker of the cluster declares a ``GPU`` resource.
    """
    workers = workers or default_workers()
    if client is not None:
        yield Runner("distributed", workers, client, resources or _declared_gpus(client))
        return
    scheduler = (scheduler or "threads").strip()
    if scheduler in LOCAL_SCHEDULERS:
        yield Runner(scheduler, workers)
        return
    from distributed import Client, LocalCluster

    if scheduler == "local":
        # Dask's own log lines (workers starting and closing) only with -v, like geoseg's.
        quiet = not logging.getLogger("geoseg").isEnabledFor(logging.INFO)
        if quiet:
            silence_dask()
        with workers_ignore_ctrl_c():
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                                   silence_logs=logging.CRITICAL if quiet else logging.WARNING)
        with cluster, Client(cluster) as c:
            yield Runner("local", workers, c)
        return
    if "://" not in scheduler:
        raise GeosegError(
            f"unknown scheduler {scheduler!r}; use threads, sync, local or an address like tcp://host:8786"
        )
    if not logging.getLogger("geoseg").isEnabledFor(logging.INFO):
        silence_dask()
    try:
        c = Client(scheduler, timeout="10s")
    except (OSError, TimeoutError) as exc:
        raise GeosegError(f"cannot reach the Dask scheduler at {scheduler} ({exc})") from None
    with c:
        n = len(c.scheduler_info().get("workers", {})) or workers
        yield Runner(scheduler, n, c, resources or _declared_gpus(c))


def _declared_gpus(client) -> dict | None:
    """``{"GPU": 1}`` when a worker of the cluster declares GPUs, so model tasks go only there."""
    workers = client.scheduler_info().get("workers", {}).values()
    return {"GPU": 1} if any(w.get("resources", {}).get("GPU") for w in workers) else None


@contextlib.contextmanager
def workers_ignore_ctrl_c() -> Iterator[None]:
    """Worker processes started here inherit an ignored SIGINT (Python keeps it ignored at start-up).

    Ctrl-C reaches the whole process group; this process unwinds and closes the
    cluster, and the workers, instead of each printing a KeyboardInterrupt
    traceback, are shut down by it.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def silence_dask() -> None:
    """Importing distributed sets its loggers to INFO; for a quiet run, only critical lines remain."""
    for name in ["asyncio", *logging.root.manager.loggerDict]:
        if name.split(".")[0] in ("distributed", "tornado", "bokeh", "asyncio"):
            logging.getLogger(name).setLevel(logging.CRITICAL)


def run_graph(graph: list[tuple[object, object]], sink, runner: Runner, alongside=None) -> None:
    """Compute ``(item, delayed)`` pairs, calling ``sink(item, result)`` as each finishes.

    With a local scheduler the sinks are tasks of the graph, so a finished result
    is consumed (written) and freed at once. With a cluster, results come back to
    this process as they complete and are written here, where the output is.
    ``alongside()``: work for this process while the cluster starts on the graph
    (before the graph, with a local scheduler).
    """
    import dask

    if runner.client is None:
        if alongside is not None:
            alongside()
        import dask.local
        import dask.threaded

        sinks = [dask.delayed(sink, pure=False)(item, res) for item, res in graph]
        # The scheduler as a function, not its name: a name makes Dask look for a distributed client
        # first, which imports distributed (a quarter of a second) on every run.
        get = dask.threaded.get if runner.scheduler == "threads" else dask.local.get_sync
        dask.compute(*sinks, scheduler=get, num_workers=runner.workers)
        return
    from distributed import as_completed

    client = runner.client
    # unoptimized: Dask's graph optimization can drop task annotations (dask #7036), such as a model
    # task's resources={"GPU": 1}
    futures = client.compute([res for _, res in graph], optimize_graph=False)
    by_key = {f.key: item for f, (item, _) in zip(futures, graph)}
    try:
        if alongside is not None:
            alongside()
        for fut in as_completed(futures):
            sink(by_key[fut.key], fut.result())
            fut.release()
    finally:
        client.cancel(futures)


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


class JsonProgress:
    """Progress as JSON lines on stderr, for programs that run geoseg (the QGIS plugin): one line when a task
    starts and one per update, ``{"progress": {"task": NAME, "done": N, "total": M, "unit": UNIT}}``;
    ``geoseg --progress-json COMMAND ...`` (or ``GEOSEG_PROGRESS=json``) turns it on."""

    def __init__(self, total: int, name: str, unit: str) -> None:
        self.total, self.name, self.unit, self.done = int(total), str(name), unit, 0
        self._lock = threading.Lock()
        self._emit()

    def _emit(self) -> None:
        import json
        import sys

        line = json.dumps({"progress": {"task": self.name, "done": self.done, "total": self.total,
                                        "unit": self.unit}})
        sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def update(self, n: int) -> None:
        with self._lock:
            self.done += int(n)
            self._emit()

    def close(self) -> None:
        pass


def progress_bar(total: int, name: str, enabled: bool, unit: str = "chunk"):
    """A tqdm bar on stderr (``done/total``), JSON lines in ``--progress-json`` mode, or a stand-in that shows
    nothing."""
    if not enabled:
        return _NoBar()
    import sys

    if os.environ.get("GEOSEG_PROGRESS") == "json":
        return JsonProgress(total, name, unit)

    from tqdm import tqdm

    # leave=True: the bar's last state (done/total) stays on screen however fast the last updates came
    return tqdm(total=total, desc=name, unit=unit, file=sys.stderr, leave=True, dynamic_ncols=True)
