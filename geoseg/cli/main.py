"""The ``geoseg`` click group; errors the user can fix become one line."""

from __future__ import annotations

import logging
import sys
import traceback

import click

from geoseg.errors import GeosegError, Terminated
from geoseg.version import __version__


class GeosegGroup(click.Group):
    """Turns user errors into ``geoseg: error: ...`` and exit status 1."""

    def invoke(self, ctx: click.Context):
        debug = "--debug" in sys.argv
        try:
            return super().invoke(ctx)
        except GeosegError as exc:
            if ctx.obj and ctx.obj.get("debug") or debug:
                traceback.print_exc()
            click.echo(f"geoseg: error: {exc}", err=True)
            ctx.exit(1)
        except (KeyboardInterrupt, Terminated) as exc:
            # The work unwound (temporaries discarded); say it in one line, not Dask's tracebacks.
            _quiet_exit()
            if debug:
                traceback.print_exc()
            interrupted = isinstance(exc, KeyboardInterrupt)
            click.echo("geoseg: interrupted" if interrupted else "geoseg: terminated", err=True)
            global _unwound
            _unwound = True
            ctx.exit(130 if interrupted else 143)


@click.group(cls=GeosegGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="geoseg")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.option("-v", "--verbose", is_flag=True, help="Log progress messages.")
@click.option("--progress-json", is_flag=True,
              help='Progress as JSON lines on stderr instead of bars: {"progress": {"task", "done", "total", "unit"}} '
                   "per update (for programs that run geoseg, such as the QGIS plugin).")
@click.pass_context
def cli(ctx: click.Context, debug: bool, verbose: bool, progress_json: bool) -> None:
    """Segment large GeoTIFFs: predict, vectorize, evaluate."""
    if progress_json:
        import os

        os.environ["GEOSEG_PROGRESS"] = "json"  # child processes (workflow steps, Dask workers) too
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    level = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, stream=sys.stderr, format="geoseg: %(message)s")
    logging.getLogger("geoseg").setLevel(level)
    if not (debug or verbose):
        # Libraries' warnings (NotGeoreferencedWarning, pyogrio's, tqdm's) and Dask's log lines only with -v:
        # geoseg says what matters in its own words.
        import warnings

        warnings.simplefilter("ignore")
        # Libraries that reset the filters inside catch_warnings() (rasterio's writer does) still print nothing.
        warnings.showwarning = _drop_warning
        logging.getLogger("distributed").setLevel(logging.CRITICAL)
        # GDAL's and libtiff's own lines (a full disk's "_tiffWriteProc: No space left on device.") in every
        # thread, Dask's included: geoseg's one line names the problem.
        from geoseg.io import gdal_messages

        gdal_messages.silence()


def _drop_warning(*args, **kwargs) -> None:
    logging.getLogger("geoseg").debug("warning: %s", args[0] if args else "")


def _register() -> None:
    from geoseg.cli.benchmark import benchmark
    from geoseg.cli.cluster import cluster
    from geoseg.cli.evaluate import evaluate
    from geoseg.cli.model import model
    from geoseg.cli.predict import predict
    from geoseg.cli.run import run, status
    from geoseg.cli.train import train
    from geoseg.cli.vectorize import vectorize

    cli.add_command(benchmark)
    cli.add_command(cluster)
    cli.add_command(evaluate)
    cli.add_command(model)
    cli.add_command(predict)
    cli.add_command(run)
    cli.add_command(status)
    cli.add_command(train)
    cli.add_command(vectorize)


_register()


# Set once an interrupt has unwound the work: main() then exits at once (see there).
_unwound = False


def _on_sigterm(signum, frame) -> None:
    raise Terminated()


def _quiet_exit() -> None:
    """After an interrupt, threads and Dask workers still winding down must not print tracebacks."""
    import logging as _logging
    import threading

    threading.excepthook = lambda args: None
    for name in list(_logging.root.manager.loggerDict):
        if name.split(".")[0] in ("distributed", "tornado", "asyncio"):
            _logging.getLogger(name).setLevel(_logging.CRITICAL + 1)


def _bound_malloc_arenas(n: int = 2) -> None:
    """At most ``n`` glibc malloc arenas for this process (before any thread starts).

    glibc gives each new thread its own arena (up to 8 per core), so chunk buffers freed by one Dask
    worker thread stay mapped in its arena while another thread allocates elsewhere: a predict at
    8192² peaked at 585-627 MB with the default and 558-564 MB with two arenas, at the same speed
    (bench/RESULTS.md). ``MALLOC_ARENA_MAX`` in the environment wins; other C libraries do nothing.
    """
    import ctypes
    import os

    if "MALLOC_ARENA_MAX" in os.environ or not sys.platform.startswith("linux"):
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return
    mallopt(-8, n)  # M_ARENA_MAX


def main() -> None:
    import signal

    _bound_malloc_arenas()
    signal.signal(signal.SIGTERM, _on_sigterm)  # unwind like Ctrl-C: clean up, one line, exit 143
    try:
        cli(prog_name="geoseg")
    except SystemExit as exc:
        if not _unwound:
            raise
        # The interrupt arrived at an arbitrary point: a Dask pool thread may still be inside a task, or
        # blocked on a lock the interrupted main thread held. The work has unwound, its temporaries are
        # gone and the line is said, so leave without the interpreter's exit-time joins of those threads.
        import os

        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(exc.code)
