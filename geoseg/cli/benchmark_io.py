"""``geoseg benchmark predict``, ``export`` and ``import``: between geoseg and benchmark formats."""

from __future__ import annotations

import click

from geoseg.cli.options import debug_option, overwrite_opt, raster_processing_options


@click.command("predict")
@click.argument("adapter")
@click.argument("bundle")
@click.option("--root", required=True, type=click.Path(file_okay=False), help="The benchmark's root folder.")
@click.option("--split", default=None)
@click.option("--classes", type=click.Path(dir_okay=False), help="folder: the class-list YAML.")
@click.option("--annotations", type=click.Path(dir_okay=False),
              help="coco-panoptic: the annotation JSON whose images (under --root) are predicted.")
@click.option("--instances", "instances_bundle", default=None,
              help="Panoptic adapters: a second bundle giving the things (see geoseg predict --instances).")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False))
@raster_processing_options
@debug_option
def predict(adapter, bundle, root, split, classes, annotations, instances_bundle, output, **opts) -> None:
    """Run BUNDLE over the benchmark's images; write predictions in its own format (panoptic adapters: a results
    JSON, OUTPUT/panoptic.json, beside its PNG folder)."""
    from geoseg.benchmarks.predict import predict as run
    from geoseg.prediction import PredictOptions

    opts.pop("allow_no_crs")
    files = run(adapter, bundle, output, root, split, classes, PredictOptions(instances=instances_bundle, **opts),
                annotations=annotations)
    if files and files[0].name == "panoptic.json":
        click.echo(f"panoptic results: {files[0]} (segment PNGs in {files[0].with_suffix('')})")
        return
    click.echo(f"{len(files)} predictions in {output}")


@click.command("export")
@click.argument("kind", type=click.Choice(["coco", "voc", "coco-panoptic"]))
@click.argument("scenes", type=click.Path())
@click.argument("labels", type=click.Path(dir_okay=False), required=False)
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False))
@click.option("--chip-size", type=int, default=512, show_default=True)
@click.option("--overlap", type=int, default=0, show_default=True)
@click.option("--class-field", default=None, help="Label field naming each feature's class.")
@click.option("--category", default="building", show_default=True, help="The class when there is no field.")
@click.option("--format", "fmt", type=click.Choice(["png", "tif"]), default="png", show_default=True)
@click.option("--split", default="train", show_default=True, help="voc: the split file's name.")
@click.option("--classes", type=click.Path(dir_okay=False), default=None,
              help="coco-panoptic: the class list (isthing on thing classes); default: the rasters' metadata.")
@click.option("--reference", is_flag=True,
              help="coco-panoptic: the rasters are references: a thing class's pixels without an instance are crowd.")
@overwrite_opt
@debug_option
def export(kind, scenes, labels, output, classes, reference, **opts) -> None:
    """Cut georeferenced SCENES labelled by LABELS into COCO instance or VOC semantic chips; coco-panoptic: cut
    two-band (class id, instance id) rasters such as NAME.panoptic.tif into COCO panoptic chips (no LABELS)."""
    from geoseg.errors import GeosegError

    if kind == "coco-panoptic":
        from geoseg.benchmarks.coco_panoptic import export_panoptic

        if labels is not None:
            raise GeosegError("coco-panoptic exports the rasters' own segments: give no LABELS")
        out = export_panoptic(scenes, output, opts["chip_size"], opts["overlap"], classes, reference, opts["overwrite"])
        click.echo(f"chips in {out}")
        return
    if labels is None:
        raise GeosegError(f"{kind} export needs LABELS (a vector file of the objects)")
    if classes is not None or reference:
        raise GeosegError("--classes and --reference apply to coco-panoptic")
    from geoseg.benchmarks.export import export as run

    click.echo(f"chips in {run(kind, scenes, labels, output, **opts)}")


@click.command("import")
@click.argument("kind", type=click.Choice(["coco", "coco-panoptic"]))
@click.argument("results", type=click.Path(dir_okay=False))
@click.option("--annotations", type=click.Path(dir_okay=False),
              help="The export's annotations.json (coco-panoptic: its panoptic.json, when RESULTS carry no "
                   "georeferencing).")
@click.option("-o", "--output", required=True, type=click.Path(),
              help="GeoPackage to write (coco-panoptic: a folder of NAME.panoptic.tif).")
@click.option("--score-threshold", type=float, default=0.0, show_default=True)
@overwrite_opt
@debug_option
def import_(kind, results, annotations, output, score_threshold, overwrite) -> None:
    """COCO RESULTS on exported chips -> a georeferenced, styled GeoPackage (one polygon per instance);
    coco-panoptic: chips -> georeferenced two-band (class id, instance id) GeoTIFFs."""
    from geoseg.errors import GeosegError

    if kind == "coco-panoptic":
        from geoseg.benchmarks.coco_panoptic import import_panoptic

        for f in import_panoptic(results, output, annotations, overwrite):
            click.echo(f)
        return
    if annotations is None:
        raise GeosegError("coco import needs --annotations (the export's annotations.json)")
    from geoseg.benchmarks.export import import_coco

    click.echo(f"instances: {import_coco(results, annotations, output, score_threshold, overwrite)}")
