"""``geoseg predict``: run a model bundle over GeoTIFF scenes."""

from __future__ import annotations

import click

from geoseg.cli.options import debug_option, output_dir_opt, probabilities_opt, raster_processing_options
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
@click.option("--score-threshold", type=float, default=None,
              help="Instance bundles: drop detections scoring below this (default 0.5).")
@click.option("--mask-threshold", type=float, default=None,
              help="Instance bundles: mask probability that counts as inside the object (default 0.5).")
@click.option("--max-object-size", default=None,
              help="Instance bundles: the largest expected object, in pixels (40) or metres (12m). The overlap "
                   "must be at least this, or objects could be cut by tiles (default: the bundle's).")
@click.option("--coco-results", type=click.Path(dir_okay=False), default=None,
              help="Instance bundles: also write every instance as COCO results JSON (scene pixels; image_id is "
                   "the scene's number in the input order).")
@click.option("--refine", type=click.Choice(["crf"]), default=None,
              help="crf: the class raster is the dense-CRF refinement of the blended probabilities (class edges "
                   "snap to image edges; pydensecrf2), on a fixed window grid: seam-free for any chunking.")
@click.option("--crf", default=None,
              help="CRF settings over the bundle's and the defaults, e.g. bilateral_sxy=60,iterations=10 "
                   "(gaussian_sxy 3, gaussian_weight 3, bilateral_sxy 80, bilateral_srgb 13, "
                   "bilateral_weight 10, iterations 5, halo 128).")
@click.option("--panoptic", is_flag=True,
              help="Also NAME.panoptic.tif (class id, instance id) and NAME.panoptic.gpkg (stuff regions per class, "
                   "one polygon per thing): a bundle with object channels gives both halves itself.")
@click.option("--instances", "instances_bundle", default=None,
              help="A second bundle (instance model or object channels) giving the things of NAME.panoptic.tif; "
                   "BUNDLE's class raster gives the stuff. Implies --panoptic.")
@click.option("--thing-score", type=float, default=0.5, show_default=True,
              help="Panoptic: instances scoring below this are not things (their pixels take the class raster's "
                   "stuff).")
@click.option("--thing-overlap", type=float, default=0.5, show_default=True,
              help="Panoptic: an instance that keeps less than this share of its mask after higher-scoring masks "
                   "took theirs is dropped.")
@click.option("--aoi", type=click.Path(dir_okay=False), default=None,
              help="Web-map inputs (XYZ, WMS, WMTS: a GDAL service XML file or connection string): the area to fetch "
                   "and predict, read at the model's pixel size into OUTPUT/NAME.webmap.tif.")
@click.option("--vectorize", "do_vectorize", is_flag=True,
              help="Also vectorize each class raster into OUTPUT/NAME.gpkg (see geoseg vectorize).")
@vectorize_options
@debug_option
def predict(bundle: str, inputs: tuple[str, ...], output: str, do_vectorize: bool, min_area: float,
            fill_holes: float, simplify: float, regularize: bool, split_touching: bool, split_classes: str | None,
            split_depth: float, connectivity: str, all_classes: bool, instances_bundle: str | None, **opts) -> None:
    """Predict class rasters for INPUTS (files, folders or globs) with BUNDLE.

    Writes OUTPUT/NAME.classes.tif (a COG with a colour map) per scene, and with
    --vectorize OUTPUT/NAME.gpkg. A bundle with object channels also writes
    OUTPUT/NAME.instances.gpkg (one polygon per object) and NAME.instances.tif
    (instance ids); an instance bundle (maskrcnn) writes only those, and its overlap
    must be at least the largest object's size. --regularize squares the building
    footprints of NAME.instances.gpkg (and, with --vectorize, of NAME.gpkg).
    --panoptic (or --instances BUNDLE2) also writes NAME.panoptic.tif and .gpkg.
    """
    from pathlib import Path

    from geoseg.models.bundle import read_meta, resolve_bundle
    from geoseg.prediction import PredictOptions, writes_instances
    from geoseg.prediction import predict as run

    # --regularize: the instance footprints when the bundle writes them, and with --vectorize its polygons
    things = read_meta(resolve_bundle(instances_bundle or bundle))
    instances_regularized = regularize and (not do_vectorize or writes_instances(things))
    options = PredictOptions(regularize=instances_regularized, instances=instances_bundle, **opts)
    vopts = None
    if do_vectorize:  # checked before any scene is predicted
        from geoseg.vector.vectorize import VectorizeOptions

        vopts = VectorizeOptions(
            min_area=min_area, fill_holes=fill_holes, simplify=simplify, regularize=regularize,
            split_touching=split_touching, split_classes=split_classes, split_depth=split_depth,
            connectivity=int(connectivity),
            all_classes=all_classes, chunk_size=options.chunk_size, workers=options.workers,
            scheduler=options.scheduler, overwrite=True, allow_no_crs=options.allow_no_crs,
            progress=options.progress,
        )
    outs = run(bundle, list(inputs), output, options)
    for o in outs:
        if o.skipped:
            click.echo(f"skipped {Path(o.scene).name} (output exists; --overwrite to replace)")
            continue
        for f in o.files:
            click.echo(f)
    skipped = sum(o.skipped for o in outs)
    click.echo(f"{len(outs) - skipped} scene{'s' if len(outs) - skipped != 1 else ''} predicted"
               + (f", {skipped} skipped" if skipped else ""), err=True)
    if options.coco_results:
        click.echo(options.coco_results)
    if vopts is not None:
        from dataclasses import replace

        from geoseg.vector.vectorize import vectorize

        for o in (o for o in outs if o.classes is not None):  # instance outputs are polygons already
            gpkg = o.classes.with_name(o.classes.name.replace(".classes.tif", ".gpkg"))
            click.echo(vectorize(o.classes, gpkg, replace(vopts, source=Path(o.scene).name)))
