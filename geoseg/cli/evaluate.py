"""``geoseg evaluate``: accuracy of class rasters against reference rasters or vectors."""

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


@click.command()
@click.argument("prediction", type=click.Path())
@click.argument("reference", type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Report folder.")
@classes_opt
@click.option("--class-field", default=None, help="Vector reference field holding class ids or names.")
@click.option("--reference-class", default=None, help="Every vector reference feature is this class (name or id).")
@click.option("--ignore", default="", help="Class ids left out of every count, comma-separated.")
@click.option("--aoi", type=click.Path(dir_okay=False), default=None, help="Evaluate only inside these polygons.")
@click.option("--objects", "object_classes", default=None,
              help="Classes scored as objects (default: building), comma-separated names or ids.")
@click.option("--iou-threshold", type=float, default=0.5, show_default=True, help="Object match threshold.")
@click.option("--min-reference-px", type=float, default=20, show_default=True,
              help="Reference objects of this many pixels or fewer are not counted (the SpaceNet rule; 0: all).")
@click.option("--grid-size", type=int, default=256, show_default=True, help="Audit grid cell in pixels.")
@click.option("--allow-missing", is_flag=True, help="Skip scenes without a reference in folder runs.")
@click.option("--resolution", type=float, default=None,
              help="Vector against vector: rasterize both at this pixel size, in CRS units.")
@click.option("--grid", type=click.Path(dir_okay=False), default=None,
              help="Vector against vector: rasterize both onto this template raster's grid.")
@click.option("--match-clusters", is_flag=True,
              help="PREDICTION is a clustering (geoseg cluster): match clusters to the --classes one to one "
                   "(Hungarian, per scene) before scoring.")
@click.option("--panoptic", is_flag=True,
              help="PREDICTION is NAME.panoptic.tif (class id, instance id; geoseg predict --panoptic): also panoptic "
                   "quality (PQ, SQ, RQ per class; All, Things, Stuff) against a two-band reference raster or "
                   "vectors (each thing polygon one instance).")
@allow_no_crs_opt
@click.option("--no-audit", "audit", is_flag=True, flag_value=False, default=True, help="Skip audit.gpkg.")
@chunk_size_opt
@workers_opt
@scheduler_opt
@overwrite_opt
@progress_opt
@debug_option
def evaluate(prediction, reference, output, ignore, object_classes, **opts) -> None:
    """Score PREDICTION against REFERENCE (two files, or two folders matched by scene name).

    Writes OUTPUT/report.json, report.md, report.html and audit.gpkg.
    """
    from geoseg.errors import GeosegError
    from geoseg.evaluation.evaluate import EvaluateOptions
    from geoseg.evaluation.evaluate import evaluate as run

    try:
        ignore_ids = tuple(int(v) for v in ignore.split(",") if v.strip())
    except ValueError:
        raise GeosegError(f"--ignore must be comma-separated class ids, got {ignore!r}") from None
    objects = tuple(v.strip() for v in object_classes.split(",")) if object_classes else None
    options = EvaluateOptions(ignore=ignore_ids, object_classes=objects, **opts)
    report = run(prediction, reference, output, options)
    from pathlib import Path

    from geoseg.evaluation.report import headline

    for line in headline(report):
        click.echo(line)
    if report.get("panoptic"):
        pan = report["panoptic"]
        fmt = lambda v: "–" if v is None else f"{v:.4f}"  # noqa: E731
        for k in ("All", "Things", "Stuff"):
            click.echo(f"panoptic {k}: PQ {fmt(pan[k]['pq'])}, SQ {fmt(pan[k]['sq'])}, RQ {fmt(pan[k]['rq'])} "
                       f"({pan[k]['n']} classes)")
    for scene in report.get("cluster_matching", {}).get("scenes", []):
        pairs = ", ".join(f"{k} -> {v}" for k, v in scene["clusters"].items())
        rest = f"; unmatched: {', '.join(scene['unmatched'])}" if scene["unmatched"] else ""
        click.echo(f"{scene['scene']}: clusters matched one to one (Hungarian): {pairs}{rest}")
    out = Path(output)
    click.echo(f"report: {out / 'report.html'} (also report.md, report.json)")
    if options.audit:
        click.echo(f"audit layers: {out / 'audit.gpkg'} (TP/FP/FN per class and an IoU grid; open in QGIS)")
