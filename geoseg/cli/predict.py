"""``geoseg predict``: run a model bundle over GeoTIFF scenes."""

from __future__ import annotations

import click

from geoseg.cli.main import debug_option
from geoseg.cli.options import output_dir_opt, probabilities_opt, raster_processing_options


@click.command()
@click.argument("bundle", type=click.Path())
@click.argument("inputs", nargs=-1, required=True)
@output_dir_opt
@raster_processing_options
@probabilities_opt
@debug_option
def predict(bundle: str, inputs: tuple[str, ...], output: str, **opts) -> None:
    """Predict class rasters for INPUTS (files, folders or globs) with BUNDLE.

    Writes OUTPUT/NAME.classes.tif (a COG with a colour map) per scene.
    """
    from geoseg.predict import PredictOptions, predict as run

    outs = run(bundle, list(inputs), output, PredictOptions(**opts))
    for o in outs:
        click.echo(o.classes)
        if o.probabilities:
            click.echo(o.probabilities)
