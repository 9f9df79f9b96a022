"""``geoseg benchmark``: list, evaluate, predict, export and import public benchmark formats."""

from __future__ import annotations

import click

from geoseg.cli.main import debug_option
from geoseg.cli.options import overwrite_opt, raster_processing_options


@click.group()
def benchmark() -> None:
    """Score and convert PASCAL VOC, Cityscapes, COCO and mmsegmentation-folder benchmarks."""


@benchmark.command("list")
@debug_option
def list_adapters() -> None:
    """The adapters, what each reads and its conventions."""
    from geoseg import benchmarks

    for name in benchmarks.names():
        a = benchmarks.get(name)
        click.echo(f"{name}: {a.summary}\n  reads: {a.layout}\n  conventions: {a.conventions}")


@benchmark.command("evaluate")
@click.argument("adapter")
@click.argument("predictions", type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Report folder.")
@click.option("--root", type=click.Path(file_okay=False), help="The benchmark's root folder.")
@click.option("--split", default=None, help="Split (voc, folder: optional; cityscapes: default val).")
@click.option("--annotations", type=click.Path(dir_okay=False), help="coco: the annotation JSON.")
@click.option("--classes", type=click.Path(dir_okay=False), help="folder: the class-list YAML.")
@click.option("--reduce-zero-label", is_flag=True, default=None, help="folder: reference 0 ignored, others - 1.")
@click.option("--train-ids", is_flag=True, default=None, help="cityscapes: predictions are trainIds PNGs.")
@click.option("--min-region-size", type=int, help="cityscapes-instances: smallest scored instance (default 100).")
@click.option("--segm-area", type=click.Choice(["box", "mask"]), help="coco: what decides object size for segm.")
@click.option("--engine", type=click.Choice(["auto", "faster-coco-eval", "pycocotools"]), help="coco: COCOeval.")
@click.option("--iou-types", help="coco: segm, bbox or segm,bbox (default both).")
@click.option("--allow-missing", is_flag=True, default=None, help="Skip images without a prediction.")
@overwrite_opt
@debug_option
def evaluate(adapter, predictions, output, overwrite, **options) -> None:
    """Score PREDICTIONS (a folder, or coco's results JSON) with ADAPTER; writes report.json/.md/.html."""
    from geoseg import benchmarks
    from geoseg.benchmarks.cli_support import call_with, summary

    ad = benchmarks.get(adapter)
    report = call_with(ad.evaluate, predictions, output, overwrite=overwrite, **options)
    for line in summary(report):
        click.echo(line)
    click.echo(f"report: {output}/report.html (also report.md, report.json)")


@benchmark.command("predict")
@click.argument("adapter")
@click.argument("bundle")
@click.option("--root", required=True, type=click.Path(file_okay=False), help="The benchmark's root folder.")
@click.option("--split", default=None)
@click.option("--classes", type=click.Path(dir_okay=False), help="folder: the class-list YAML.")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False))
@raster_processing_options
@debug_option
def predict(adapter, bundle, root, split, classes, output, **opts) -> None:
    """Run BUNDLE over the benchmark's images; write predictions in its own format."""
    from geoseg.benchmarks.predict import predict as run
    from geoseg.predict import PredictOptions

    opts.pop("allow_no_crs")
    files = run(adapter, bundle, output, root, split, classes, PredictOptions(**opts))
    click.echo(f"{len(files)} predictions in {output}")


@benchmark.command("export")
@click.argument("kind", type=click.Choice(["coco", "voc"]))
@click.argument("scenes", type=click.Path())
@click.argument("labels", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False))
@click.option("--chip-size", type=int, default=512, show_default=True)
@click.option("--overlap", type=int, default=0, show_default=True)
@click.option("--class-field", default=None, help="Label field naming each feature's class.")
@click.option("--category", default="building", show_default=True, help="The class when there is no field.")
@click.option("--format", "fmt", type=click.Choice(["png", "tif"]), default="png", show_default=True)
@click.option("--split", default="train", show_default=True, help="voc: the split file's name.")
@overwrite_opt
@debug_option
def export(kind, scenes, labels, output, **opts) -> None:
    """Cut georeferenced SCENES labelled by LABELS into COCO instance or VOC semantic chips."""
    from geoseg.benchmarks.export import export as run

    click.echo(f"chips in {run(kind, scenes, labels, output, **opts)}")


@benchmark.command("import")
@click.argument("kind", type=click.Choice(["coco"]))
@click.argument("results", type=click.Path(dir_okay=False))
@click.option("--annotations", required=True, type=click.Path(dir_okay=False), help="The export's annotations.json.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="GeoPackage to write.")
@click.option("--score-threshold", type=float, default=0.0, show_default=True)
@overwrite_opt
@debug_option
def import_(kind, results, annotations, output, score_threshold, overwrite) -> None:
    """COCO RESULTS on exported chips -> a georeferenced, styled GeoPackage (one polygon per instance)."""
    from geoseg.benchmarks.export import import_coco

    click.echo(f"instances: {import_coco(results, annotations, output, score_threshold, overwrite)}")
