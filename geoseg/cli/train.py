"""``geoseg train``: a bundle from a training config."""

from __future__ import annotations

import click

from geoseg.cli.options import debug_option, progress_opt


@click.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Bundle directory.")
@click.option("--resume", is_flag=True, help="Continue from the last epoch checkpoint in OUTPUT.")
@click.option("--overwrite", is_flag=True, help="Replace a different model in OUTPUT.")
@progress_opt
@debug_option
def train(config: str, output: str, resume: bool, overwrite: bool, progress: bool) -> None:
    """Train a model bundle from the YAML CONFIG into OUTPUT (metrics.csv, checkpoint/, the best bundle)."""
    from geoseg.training import train as run

    click.echo(run(config, output, resume=resume, overwrite=overwrite, progress=progress))
