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


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


@contextlib.contextmanager
def open_runner(scheduler: str | None = None, workers: int | None = None, client: object | None = None) -> Iterator[Runner]:
    """Yield a :class:`Runner`; clusters started here are closed afterwards."""
    workers = workers or default_workers()
    if client is not None:
        yield Runner("distributed", workers, client)
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
            _silence_dask()
        with _workers_ignore_ctrl_c():
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
        _silence_dask()
    try:
        c = Client(scheduler, timeout="10s")
    except (OSError, TimeoutError) as exc:
        raise GeosegError(f"cannot reach the Dask scheduler at {scheduler} ({exc})") from None
    with c:
        n = len(c.scheduler_info().get("workers", {})) or workers
        yield Runner(scheduler, n, c)


@contextlib.contextmanager
def _workers_ignore_ctrl_c() -> Iterator[None]:
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


def _silence_dask() -> None:
    """Importing distributed sets its loggers to INFO; for a quiet run, only critical lines remain."""
    for name in ["asyncio", *logging.root.manager.loggerDict]:
        if name.split(".")[0] in ("distributed", "tornado", "bokeh", "asyncio"):
            logging.getLogger(name).setLevel(logging.CRITICAL)


def run_graph(graph: list[tuple[object, object]], sink, runner: Runner) -> None:
    """Compute ``(item, delayed)`` pairs, calling ``sink(item, result)`` as each finishes.

    With a local scheduler the sinks are tasks of the graph, so a finished result
    is consumed (written) and freed at once. With a cluster, results come back to
    this process as they complete and are written here, where the output is.
    """
    import dask

    if runner.client is None:
        sinks = [dask.delayed(sink, pure=False)(item, res) for item, res in graph]
        dask.compute(*sinks, scheduler=runner.scheduler, num_workers=runner.workers)
        return
    from distributed import as_completed

    client = runner.client
    futures = client.compute([res for _, res in graph])
    by_key = {f.key: item for f, (item, _) in zip(futures, graph)}
    try:
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


def progress_bar(total: int, name: str, enabled: bool, unit: str = "chunk"):
    """A tqdm bar on stderr (``done/total``), or a stand-in that shows nothing."""
    if not enabled:
        return _NoBar()
    import sys

    from tqdm import tqdm

    # leave=True: the bar's last state (done/total) stays on screen however fast the last updates came
    return tqdm(total=total, desc=name, unit=unit, file=sys.stderr, leave=True, dynamic_ncols=True)
