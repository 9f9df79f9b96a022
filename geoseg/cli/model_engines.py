"""``geoseg model compile``, ``check`` and ``quantize``: CPU engines for a bundle, measured here."""

from __future__ import annotations

import click

from geoseg.cli.options import debug_option


@click.command("compile")
@click.argument("bundle")
@click.option("--engine", type=click.Choice(["openvino", "onnxruntime"]), default="openvino", show_default=True)
@click.option("--tile-size", type=int, default=None, help="Tile size to convert for (default: the bundle's).")
@debug_option
def compile_model(bundle, engine, tile_size):
    """Convert BUNDLE for ENGINE once and keep it beside the bundle (BUNDLE/engines/)."""
    from geoseg.engines.runtime import compile_bundle

    click.echo(compile_bundle(bundle, engine, tile_size))


@click.command("check")
@click.argument("bundle")
@click.option("--against", type=click.Choice(["fp32"]), default="fp32", show_default=True,
              help="The reference run: torch fp32.")
@click.option("--scene", required=True, type=click.Path(dir_okay=False), help="A scene to predict.")
@click.option("--reference", type=click.Path(dir_okay=False), default=None,
              help="Labels of the scene: the IoU change is then against real labels.")
@click.option("--tile-size", type=int, default=None)
@click.option("--include-slow", is_flag=True, help="Also measure bf16 where this CPU only emulates it.")
@click.option("--record", is_flag=True, help="Store the bf16 result in the bundle (read by --precision auto).")
@click.option("--json", "as_json", is_flag=True)
@debug_option
def check_model(bundle, against, scene, reference, tile_size, include_slow, record, as_json):
    """Agreement and speed of every engine and precision against torch fp32 on SCENE."""
    import json

    from geoseg.evaluation.engines import check

    res = check(bundle, scene, reference, tile_size, include_slow, record)
    if as_json:
        click.echo(json.dumps(res, indent=2))
        return
    click.echo(f"CPU: {res['cpu']}; native bf16: {'yes' if res['native_bf16'] else 'no'}")
    click.echo("engine       precision  seconds  argmax agreement  max logit diff  IoU change")
    for r in res["rows"]:
        change = "–" if r["iou_change"] is None else f"{r['iou_change']:+.4f}"
        click.echo(f"{r['engine']:<12} {r['precision']:<9} {r['seconds']:8.2f}  {r['argmax_agreement']:16.4%}  "
                   f"{r['max_logit_difference']:14.2e}  {change}")


@click.command("quantize")
@click.argument("bundle")
@click.option("--calibration", "calibration", multiple=True, type=click.Path(),
              help="Scenes (files, folders, patterns) to calibrate on; a quarter of their tiles are held back "
                   "for the check. Repeatable.")
@click.option("--config", "config", type=click.Path(dir_okay=False), default=None,
              help="A training config instead: calibrate on its training blocks, check on its validation blocks "
                   "against their labels (IoU and object F1 change).")
@click.option("--tiles", type=int, default=300, show_default=True, help="Calibration tiles at most.")
@click.option("--json", "as_json", is_flag=True)
@debug_option
def quantize_model(bundle, calibration, config, tiles, as_json):
    """int8 model of BUNDLE for OpenVINO (NNCF), checked on held-back data and recorded in the bundle."""
    import json

    from geoseg.errors import GeosegError
    from geoseg.evaluation.int8 import summary

    if bool(calibration) == bool(config):
        raise GeosegError("give --calibration SCENES or --config TRAIN.yaml (one of them)")
    if config:
        from geoseg.training.config import load_config
        from geoseg.training.quantization import quantize_on_validation

        res = quantize_on_validation(bundle, load_config(config), tiles)
    else:
        from geoseg.evaluation.int8 import quantize
        from geoseg.io.inputs import resolve_inputs

        res = quantize(bundle, resolve_inputs(list(calibration)), tiles)
    click.echo(json.dumps(res, indent=2) if as_json else summary(res))
