"""``geoseg vectorize``: class raster to a styled GeoPackage."""

from __future__ import annotations

import click

from geoseg.cli.options import (
    allow_no_crs_opt,
    chunk_size_opt,
    classes_opt,
    debug_option,
    overwrite_opt,
    progress_opt,
    scheduler_opt,
    workers_opt,
)

min_area_opt = click.option("--min-area", type=float, default=0.0, show_default=True,
                            help="Drop polygons smaller than this, in m² (after seams are merged).")
fill_holes_opt = click.option("--fill-holes", type=float, default=0.0, show_default=True,
                              help="Fill holes smaller than this, in m².")
simplify_opt = click.option("--simplify", type=float, default=0.0, show_default=True,
                            help="Coverage simplification tolerance in metres (shared edges stay shared).")
connectivity_opt = click.option("--connectivity", type=click.Choice(["4", "8"]), default="4", show_default=True,
                                help="Pixel connectivity of a polygon.")
all_classes_opt = click.option("--all-classes", is_flag=True, help="Also vectorize background classes.")
regularize_opt = click.option("--regularize", is_flag=True,
                              help="Building footprints with right-angled (and 45°) edges, aligned with their "
                                   "neighbours (buildingregulariser).")

split_touching_opt = click.option("--split-touching", is_flag=True,
                                  help="Split touching objects (the building classes, or --split-classes) where "
                                       "they narrow: a distance-transform-seeded watershed, exact across tiles.")
split_classes_opt = click.option("--split-classes", default=None,
                                 help="--split-touching: the classes to split, names or ids separated by commas "
                                      "(default: the building classes).")
split_depth_opt = click.option("--split-depth", type=float, default=2.0, show_default=True,
                               help="--split-touching: how much narrower (in half-width, px) than both objects a "
                                    "neck must be to split them.")


def vectorize_options(f):
    for opt in reversed([min_area_opt, fill_holes_opt, simplify_opt, regularize_opt, split_touching_opt,
                         split_classes_opt, split_depth_opt, connectivity_opt, all_classes_opt]):
        f = opt(f)
    return f


@click.command()
@click.argument("raster", type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="GeoPackage to write.")
@classes_opt
@vectorize_options
@chunk_size_opt
@workers_opt
@scheduler_opt
@overwrite_opt
@allow_no_crs_opt
@progress_opt
@click.option("--probabilities", type=click.Path(), default=None,
              help="Probability raster for mean_confidence (default: NAME.probs.tif beside the input).")
@debug_option
def vectorize(raster: str, output: str, connectivity: str, **opts) -> None:
    """Vectorize the class RASTER into a GeoPackage with one styled layer per class."""
    from geoseg.vector.vectorize import VectorizeOptions
    from geoseg.vector.vectorize import vectorize as run

    click.echo(run(raster, output, VectorizeOptions(connectivity=int(connectivity), **opts)))
