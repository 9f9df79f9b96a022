"""``geoseg model``: create and inspect model bundles."""

from __future__ import annotations

import json

import click

from geoseg.cli.options import debug_option
from geoseg.cli.options import floats as _floats
from geoseg.cli.options import ints as _ints


@click.group()
def model() -> None:
    """Create and inspect model bundles."""


@model.command("init")
@click.argument("architecture")
@click.option("--encoder", "--backbone", "encoder", default=None,
              help="smp/timm encoder name (default resnet34); maskrcnn: resnet50, resnet50_v2, mobilenet_v3_large; "
                   "segnet: vgg16_bn (default), another vgg, or basic.")
@click.option("--bands", default="1,2,3", show_default=True, help="Input band indexes, in model order.")
@click.option("--classes", "classes", default="background,building,road,water", show_default=True,
              help="Comma-separated class names (background is prepended if absent), or a class-list YAML.")
@click.option("--mean", default=None, help="Per-band means, comma-separated (default 0).")
@click.option("--std", default=None, help="Per-band standard deviations (default 1).")
@click.option("--tile-size", type=int, default=512, show_default=True)
@click.option("--overlap", type=int, default=32, show_default=True)
@click.option("--gsd", type=float, default=None, help="Ground sample distance in metres.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("-o", "--output", required=True, type=click.Path(), help="Bundle directory to write.")
@click.option("--overwrite", is_flag=True)
@debug_option
def init(architecture, encoder, bands, classes, mean, std, tile_size, overlap, gsd, seed, output, overwrite):
    """Write a randomly initialised bundle of ARCHITECTURE."""
    from geoseg.models import default_encoder
    from geoseg.models.bundle import init_bundle

    if encoder is None:
        encoder = default_encoder(architecture)
    path = init_bundle(architecture, output, encoder=encoder, bands=_ints(bands, "--bands"),
                       classes=classes, mean=_floats(mean, "--mean"), std=_floats(std, "--std"),
                       tile_size=tile_size, overlap=overlap, gsd=gsd, seed=seed, overwrite=overwrite)
    click.echo(path)


@model.command("info")
@click.argument("bundle", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the full description (geoseg.json) instead.")
@debug_option
def info(bundle, as_json):
    """Print a bundle's summary after checking its weights load (BUNDLE: a path or packaged name)."""
    from geoseg.models.bundle import load_bundle, summarize

    b = load_bundle(bundle)
    click.echo(json.dumps(b.meta.to_json(), indent=2) if as_json else "\n".join([str(b.path), *summarize(b.meta)]))


@model.command("list")
@debug_option
def list_models():
    """The models packaged with geoseg; their names work wherever a bundle path does."""
    from geoseg.data import packaged_models
    from geoseg.models.bundle import read_meta

    for name, path in packaged_models().items():
        m = read_meta(path)
        test = m.extra.get("test", {}).get("iou", {})
        held = ", ".join(f"{k} IoU {v:.3f}" for k, v in test.items() if v is not None and k != "background")
        gsd = f"{m.gsd:.2f} m" if m.gsd else "GSD ?"
        click.echo(f"{name:<20} bands {','.join(map(str, m.bands)):<6} {gsd:<7} "
                   f"classes {','.join(c.name for c in m.classes):<22} held-out: {held or 'not recorded'}")


def _register() -> None:
    from geoseg.cli.model_engines import check_model, compile_model, quantize_model
    from geoseg.cli.model_import import import_model

    for command in (import_model, compile_model, check_model, quantize_model):
        model.add_command(command)


_register()
