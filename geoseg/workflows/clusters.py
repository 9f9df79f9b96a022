"""Where a workflow's Dask work runs: a local cluster, an existing scheduler, or batch jobs.

``local`` starts a ``distributed.LocalCluster`` of worker processes on the
loopback address; ``address`` connects to a running scheduler; ``slurm`` and
``pbs`` start the workers as batch jobs through dask-jobqueue, scaled
adaptively between ``minimum_workers`` and ``maximum_workers`` (a worker whose
job is cancelled or hits its walltime is replaced) or fixed at ``workers``.
A lost worker's tasks are re-run elsewhere by Dask itself.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass

from geoseg.errors import GeosegError
from geoseg.inference.scheduler import default_workers, silence_dask, workers_ignore_ctrl_c
from geoseg.workflows.config import Cluster

log = logging.getLogger("geoseg")


@dataclass
class Connected:
    client: object
    dashboard: str | None  # the Dask dashboard's address, where it is served
    resources: dict | None  # what each model task needs: {"GPU": 1} where the cluster declares GPUs
    describe: str


def _dashboard_served() -> bool:
    return importlib.util.find_spec("bokeh") is not None


@contextlib.contextmanager
def connect(cluster: Cluster) -> Iterator[Connected]:
    """Start or join the cluster, yield a client to it, and close what was started here."""
    from distributed import Client

    quiet = not logging.getLogger("geoseg").isEnabledFor(logging.INFO)
    if quiet:
        silence_dask()
    spec = cluster.spec
    if cluster.kind == "address":
        try:
            client = Client(spec.address, timeout="10s")
        except (OSError, TimeoutError) as exc:
            raise GeosegError(f"cannot reach the Dask scheduler at {spec.address} ({exc})") from None
        with client:
            yield Connected(client, client.dashboard_link if _dashboard_served() else None, None,
                            f"scheduler {spec.address}")
        return
    if cluster.kind == "local":
        from distributed import LocalCluster

        n = spec.workers or default_workers()
        with workers_ignore_ctrl_c():
            lc = LocalCluster(
                n_workers=n, threads_per_worker=spec.threads_per_worker, processes=True, host="127.0.0.1",
                dashboard_address="127.0.0.1:0" if _dashboard_served() else None,
                memory_limit=spec.memory_limit or "auto",
                resources={"GPU": spec.gpus} if spec.gpus else None,
                silence_logs=logging.CRITICAL if quiet else logging.WARNING,
            )
        with lc, Client(lc) as client:
            yield Connected(client, client.dashboard_link if _dashboard_served() else None,
                            {"GPU": 1} if spec.gpus else None, f"local cluster of {n} worker processes")
        return
    with _jobqueue(cluster.kind, spec) as (jq, describe), Client(jq) as client:
        want = spec.workers or spec.minimum_workers
        if spec.wait_for_workers and want:
            try:
                client.wait_for_workers(want, timeout=spec.wait_for_workers)
            except TimeoutError:
                log.warning("%d of %d workers started within %gs; starting with them",
                            len(client.scheduler_info()["workers"]), want, spec.wait_for_workers)
        yield Connected(client, client.dashboard_link if _dashboard_served() else None,
                        {"GPU": 1} if spec.gpus else None, describe)


@contextlib.contextmanager
def _jobqueue(kind: str, spec) -> Iterator[tuple[object, str]]:
    try:
        import dask_jobqueue
    except ImportError:
        raise GeosegError(f"cluster.{kind}: needs dask-jobqueue (pip install geoseg[cluster])") from None
    cls = {"slurm": dask_jobqueue.SLURMCluster, "pbs": dask_jobqueue.PBSCluster}[kind]
    directives = list(spec.job_directives)
    worker_args = []
    if spec.gpus:
        directives.append(f"--gres=gpu:{spec.gpus}" if kind == "slurm" else f"-l ngpus={spec.gpus}")
        worker_args += ["--resources", f"GPU={spec.gpus}"]
    scheduler_options = {}
    if spec.host:
        scheduler_options = {"host": spec.host, "dashboard_address": f"{spec.host}:0"}
        # the worker's HTTP server listens on every address unless told otherwise
        worker_args += ["--dashboard-address", f"{spec.host}:0"]
    kw = dict(
        cores=spec.cores, memory=spec.memory, processes=spec.processes, walltime=spec.walltime,
        queue=spec.queue, account=spec.account, job_extra_directives=directives,
        job_script_prologue=list(spec.prologue), worker_extra_args=worker_args,
        python=spec.python or sys.executable, interface=spec.interface,
        local_directory=spec.local_directory, log_directory=spec.log_directory,
        scheduler_options=scheduler_options,
    )
    kw = {k: v for k, v in kw.items() if v not in (None, [], {})} | dict(spec.options)
    try:
        jq = cls(**kw)
    except (ValueError, TypeError, OSError) as exc:
        raise GeosegError(f"cannot start the {kind.upper()} cluster ({' '.join(str(exc).split())[:200]})") from None
    try:
        if spec.workers:
            jq.scale(n=spec.workers)
            describe = f"{kind.upper()}: {spec.workers} workers as batch jobs"
        else:
            maximum = spec.maximum_workers or max(1, spec.minimum_workers)
            jq.adapt(minimum=spec.minimum_workers, maximum=maximum)
            describe = f"{kind.upper()}: {spec.minimum_workers}..{maximum} workers as batch jobs (adaptive)"
        log.info("%s job script:\n%s", kind.upper(), jq.job_script())
        yield jq, describe
    finally:
        jq.close()

