"""Options the commands share (``--debug`` and the raster-processing ones), defined once (as rasterio.rio.options)."""

from __future__ import annotations

import click

from geoseg.inference.blending import BLEND_MODES


def debug_option(f):
    """``--debug`` accepted after the command name too."""

    def callback(ctx: click.Context, param, value: bool) -> None:
        if value:
            ctx.find_root().ensure_object(dict)["debug"] = True

    return click.option("--debug", is_flag=True, expose_value=False, callback=callback,
                        help="Show tracebacks.")(f)


tile_size_opt = click.option("--tile-size", type=int, default=None,
                             help="Model input tile in pixels (default: the bundle's).")
overlap_opt = click.option("--overlap", type=int, default=None,
                           help="Pixels shared by neighbouring tiles (default: the bundle's).")
blend_opt = click.option("--blend", type=click.Choice(sorted(BLEND_MODES)), default="cosine", show_default=True,
                         help="How overlapping tiles are blended.")
chunk_size_opt = click.option("--chunk-size", type=int, default=2048, show_default=True,
                              help="Pixels per Dask task side (rounded to whole tiles).")
workers_opt = click.option("--workers", type=int, default=None,
                           help="Local parallelism: threads, or processes with --scheduler local.")
scheduler_opt = click.option("--scheduler", default="threads", show_default=True,
                             help="threads, sync, local (a LocalCluster) or a dask.distributed address.")
device_opt = click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
                          show_default=True, help="Where the model runs.")
engine_opt = click.option("--engine", type=click.Choice(["auto", "torch", "openvino", "onnxruntime"]), default="auto",
                          show_default=True, help="CPU inference engine; auto: OpenVINO where installed (the default "
                          "install has it), else ONNX Runtime, else torch.")
precision_opt = click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16", "int8"]), default="auto",
                             show_default=True,
                             help="auto: fp32, or the bundle's int8 model (on CPUs with VNNI or AMX) or bf16 (on CPUs "
                             "with native bf16) where the bundle's check of it passed. int8: geoseg model quantize.")
batch_size_opt = click.option("--batch-size", type=int, default=None,
                              help="Tiles per forward pass (default: 8 on CUDA, 1 on the CPU).")
probabilities_opt = click.option("--probabilities", is_flag=True,
                                 help="Also write NAME.probs.tif, one uint8 band per class.")
overwrite_opt = click.option("--overwrite", is_flag=True, help="Replace outputs that exist.")
allow_no_crs_opt = click.option("--allow-no-crs", is_flag=True, help="Process rasters that have no CRS.")
progress_opt = click.option("--progress/--no-progress", default=True, help="Show a progress bar on stderr.")
output_dir_opt = click.option("-o", "--output", "output", required=True, type=click.Path(file_okay=False),
                              help="Output directory.")


def raster_processing_options(f):
    """Decorate a command with every option shared by raster-processing commands."""
    for opt in reversed([tile_size_opt, overlap_opt, blend_opt, chunk_size_opt, workers_opt, scheduler_opt,
                         device_opt, engine_opt, precision_opt, batch_size_opt, overwrite_opt, allow_no_crs_opt,
                         progress_opt]):
        f = opt(f)
    return f
classes_opt = click.option("--classes", type=click.Path(dir_okay=False), default=None,
                           help="Class-list YAML (names, colours); default: the raster's or bundle's own.")


def ints(text: str, name: str) -> tuple[int, ...]:
    from geoseg.errors import GeosegError

    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise GeosegError(f"{name} must be comma-separated integers, got {text!r}") from None


def floats(text: str | None, name: str) -> tuple[float, ...] | None:
    from geoseg.errors import GeosegError

    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise GeosegError(f"{name} must be comma-separated numbers, got {text!r}") from None
