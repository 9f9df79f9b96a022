"""``geoseg cluster``: unsupervised class rasters (k-means on pixel spectra) for GeoTIFF scenes."""

from __future__ import annotations

import click

from geoseg.cli.options import (
    allow_no_crs_opt,
    chunk_size_opt,
    debug_option,
    output_dir_opt,
    overwrite_opt,
    progress_opt,
    scheduler_opt,
    workers_opt,
)
from geoseg.cli.options import ints as _ints


@click.command()
@click.argument("inputs", nargs=-1, required=True)
@output_dir_opt
@click.option("--method", type=click.Choice(["kmeans", "slic"]), default="kmeans", show_default=True,
              help="kmeans: k-means on the bands' values (standardised), fitted on a sample of valid pixels; "
                   "slic: SLIC superpixels (k-means in colour and position) as polygons.")
@click.option("--k", "k", type=int, default=6, show_default=True, help="kmeans: number of clusters.")
@click.option("--segment-size", default="40px", show_default=True,
              help="slic: the seed spacing, in ground metres (20m) or pixels (40px).")
@click.option("--compactness", type=float, default=10.0, show_default=True,
              help="slic: weight of position against colour (as in scikit-image; higher: squarer segments).")
@click.option("--iterations", type=int, default=10, show_default=True, help="slic: assignment and update rounds.")
@click.option("--bands", default=None, help="Bands to cluster on, comma-separated (default: all).")
@click.option("--sample-size", type=int, default=200_000, show_default=True,
              help="Valid pixels drawn per scene (a fixed grid and seed: the same for any chunk size) for the fit.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the sample and of k-means.")
@click.option("--joint", is_flag=True, help="Fit one model on a sample of every scene: cluster numbers agree across scenes.")
@click.option("--model", "model", type=click.Path(dir_okay=False), default=None,
              help="Apply the clusters of a NAME.clusters.json written earlier instead of fitting.")
@chunk_size_opt
@workers_opt
@scheduler_opt
@overwrite_opt
@allow_no_crs_opt
@progress_opt
@debug_option
def cluster(inputs, output, bands, **opts) -> None:
    """Cluster INPUTS (files, folders or globs) without labels.

    kmeans writes OUTPUT/NAME.clusters.tif (cluster ids 0..k-1 numbered darkest first, 255 = nodata; a COG
    with a colour map of the centres' colours) and OUTPUT/NAME.clusters.json (the fitted model) per scene.
    slic writes OUTPUT/NAME.segments.gpkg (one polygon per superpixel with its mean band values) and
    OUTPUT/NAME.segments.tif (the segment ids, 0 = nodata).
    """
    from geoseg.clustering import ClusterOptions
    from geoseg.clustering import cluster as run

    options = ClusterOptions(bands=_ints(bands, "--bands") if bands else (), **opts)
    outs = run(list(inputs), output, options)
    for o in outs:
        if o.skipped:
            click.echo(f"skipped {o.scene} (output exists; --overwrite to replace)")
            continue
        for f in o.files:
            click.echo(f)
    n = sum(not o.skipped for o in outs)
    click.echo(f"{n} scene{'s' if n != 1 else ''} clustered", err=True)
