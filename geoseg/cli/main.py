"""The ``geoseg`` click group; errors the user can fix become one line."""

from __future__ import annotations

import logging
import sys
import traceback

import click

from geoseg import __version__
from geoseg.errors import GeosegError


class GeosegGroup(click.Group):
    """Turns user errors into ``geoseg: error: ...`` and exit status 1."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except GeosegError as exc:
            if ctx.obj and ctx.obj.get("debug") or "--debug" in sys.argv:
                traceback.print_exc()
            click.echo(f"geoseg: error: {exc}", err=True)
            ctx.exit(1)


@click.group(cls=GeosegGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="geoseg")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.option("-v", "--verbose", is_flag=True, help="Log progress messages.")
@click.pass_context
def cli(ctx: click.Context, debug: bool, verbose: bool) -> None:
    """Segment large GeoTIFFs: predict, vectorize, evaluate."""
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
        logging.getLogger("distributed").setLevel(logging.CRITICAL)


def debug_option(f):
    """``--debug`` accepted after the command name too."""

    def callback(ctx: click.Context, param, value: bool) -> None:
        if value:
            ctx.find_root().ensure_object(dict)["debug"] = True

    return click.option("--debug", is_flag=True, expose_value=False, callback=callback,
                        help="Show tracebacks.")(f)


def _register() -> None:
    from geoseg.cli.evaluate import evaluate
    from geoseg.cli.model import model
    from geoseg.cli.predict import predict
    from geoseg.cli.train import train
    from geoseg.cli.vectorize import vectorize

    cli.add_command(evaluate)
    cli.add_command(model)
    cli.add_command(predict)
    cli.add_command(train)
    cli.add_command(vectorize)


_register()


def main() -> None:
    cli(prog_name="geoseg")
