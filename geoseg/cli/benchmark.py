"""``geoseg benchmark``: list, evaluate, predict, export and import public benchmark formats."""

from __future__ import annotations

import click

from geoseg.cli.options import debug_option, overwrite_opt


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


def _register() -> None:
    from geoseg.cli.benchmark_io import export, import_, predict

    for command in (predict, export, import_):
        benchmark.add_command(command)


_register()
