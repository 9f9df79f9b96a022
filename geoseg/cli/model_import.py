"""``geoseg model import``: a checkpoint from another tool as a geoseg bundle (tensors only, keys checked)."""

from __future__ import annotations

import click

from geoseg.cli.options import debug_option, floats, ints


@click.command("import")
@click.argument("kind", type=click.Choice(["torchvision-maskrcnn"]))
@click.argument("weights", type=click.Path(dir_okay=False))
@click.option("--backbone", default="resnet50", show_default=True,
              help="resnet50 (maskrcnn_resnet50_fpn), resnet50_v2 or mobilenet_v3_large.")
@click.option("--bands", default="1,2,3", show_default=True, help="Input band indexes, in model order.")
@click.option("--classes", default=None, help="Class names (background is prepended) or a class-list YAML.")
@click.option("--classes-from", type=click.Choice(["coco"]), default=None,
              help="torchvision's 91 COCO categories (for COCO-trained weights).")
@click.option("--mean", default=None, help="Per-band means the model was trained with (default 0).")
@click.option("--std", default=None, help="Per-band standard deviations (default 1).")
@click.option("--tile-size", type=int, default=512, show_default=True)
@click.option("--overlap", type=int, default=128, show_default=True, help="At least the largest object, in px.")
@click.option("-o", "--output", required=True, type=click.Path(), help="Bundle directory to write.")
@click.option("--overwrite", is_flag=True)
@debug_option
def import_model(kind, weights, backbone, bands, classes, classes_from, mean, std, tile_size, overlap, output,
                 overwrite):
    """Convert WEIGHTS (a torchvision Mask R-CNN state dict, read with weights_only) into a bundle."""
    from geoseg.classes import ClassList, load_classes
    from geoseg.errors import GeosegError
    from geoseg.instances.convert import coco_classes, import_checkpoint

    if (classes is None) == (classes_from is None):
        raise GeosegError("give --classes or --classes-from")
    if classes_from:
        table = coco_classes()
    elif classes.endswith((".yaml", ".yml")):
        table = load_classes(classes)
    else:
        table = ClassList.from_names(classes.split(","))
    click.echo(import_checkpoint(kind, weights, output, bands=ints(bands, "--bands"), classes=table,
                                 backbone=backbone, mean=floats(mean, "--mean"), std=floats(std, "--std"),
                                 tile_size=tile_size, overlap=overlap, overwrite=overwrite))
