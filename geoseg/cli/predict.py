"""``geoseg predict``: run a model bundle over GeoTIFF scenes."""

from __future__ import annotations

import click

from geoseg.cli.main import debug_option
from geoseg.cli.options import output_dir_opt, probabilities_opt, raster_processing_options
from geoseg.cli.vectorize import vectorize_options


@click.command()
@click.argument("bundle", type=click.Path())
@click.argument("inputs", nargs=-1, required=True)
@output_dir_opt
@raster_processing_options
@probabilities_opt
@click.option("--overviews", type=click.Choice(["nearest", "mode"]), default="nearest", show_default=True,
              help="Resampling of the class COG's overviews (mode: the most frequent class; slower).")
@click.option("--strict", is_flag=True,
              help="A scene that does not fit the model (band count, data type, value range, GSD) is an error.")
@click.option("--vectorize", "do_vectorize", is_flag=True,
              help="Also vectorize each class raster into OUTPUT/NAME.gpkg (see geoseg vectorize).")
@vectorize_options
@debug_option
def predict(bundle: str, inputs: tuple[str, ...], output: str, do_vectorize: bool, min_area: float,
            fill_holes: float, simplify: float, connectivity: str, all_classes: bool, **opts) -> None:
    """Predict class rasters for INPUTS (files, folders or globs) with BUNDLE.

    Writes OUTPUT/NAME.classes.tif (a COG with a colour map) per scene, and with
    --vectorize OUTPUT/NAME.gpkg.
    """
    from pathlib import Path

    from geoseg.predict import PredictOptions
    from geoseg.predict import predict as run

    options = PredictOptions(**opts)
    outs = run(bundle, list(inputs), output, options)
    for o in outs:
        if o.skipped:
            click.echo(f"skipped {Path(o.scene).name} (output exists; --overwrite to replace)")
            continue
        click.echo(o.classes)
        if o.probabilities:
            click.echo(o.probabilities)
    skipped = sum(o.skipped for o in outs)
    click.echo(f"{len(outs) - skipped} scene{'s' if len(outs) - skipped != 1 else ''} predicted"
               + (f", {skipped} skipped" if skipped else ""), err=True)
    if do_vectorize:
        from geoseg.vectorize import VectorizeOptions, vectorize

        for o in outs:
            gpkg = o.classes.with_name(o.classes.name.replace(".classes.tif", ".gpkg"))
            vopts = VectorizeOptions(
                min_area=min_area, fill_holes=fill_holes, simplify=simplify, connectivity=int(connectivity),
                all_classes=all_classes, chunk_size=options.chunk_size, workers=options.workers,
                scheduler=options.scheduler, overwrite=True, allow_no_crs=options.allow_no_crs,
                progress=options.progress, source=Path(o.scene).name,
            )
            click.echo(vectorize(o.classes, gpkg, vopts))
