"""``geoseg run`` and ``geoseg status``: declared workflows and their run ledger."""

from __future__ import annotations

import click

from geoseg.cli.options import debug_option


@click.command()
@click.argument("workflow", type=click.Path(dir_okay=False))
@click.option("--dry-run", is_flag=True, help="Print what would run, what is done and why; run nothing.")
@click.option("--cluster", default=None,
              help="Run on: local, slurm, pbs (with the workflow's block for it) or a scheduler address.")
@click.option("--force", is_flag=True, help="Run every step again, done or not.")
@click.option("--progress/--no-progress", default=None, help="Per-scene progress bars (default: on a terminal).")
@debug_option
def run(workflow: str, dry_run: bool, cluster: str | None, force: bool, progress: bool | None) -> None:
    """Run WORKFLOW (a YAML file): its steps over its scenes, skipping what is done.

    The run folder (the workflow's output) holds the outputs, ledger.sqlite,
    run-report.json/.md and STAC items. Exits 1 if a scene failed.
    """
    import sys

    from geoseg.workflows import load_workflow, plan, run_workflow, with_cluster
    from geoseg.workflows.ledger import LEDGER, Ledger

    wf = load_workflow(workflow)
    if cluster:
        wf = with_cluster(wf, cluster)
    if dry_run:
        ledger = Ledger(wf.output, create=False) if (wf.output / LEDGER).is_file() else None
        items = plan(wf, ledger, force)
        width = max((len(i.name) for i in items), default=5)
        for i in items:
            click.echo(f"{i.name:<{width}}  {i.step:<9}  {i.action:<4}  {i.reason}")
        n = sum(i.action == "run" for i in items)
        click.echo(f"{n} to run, {len(items) - n} done (dry run: nothing was run)", err=True)
        return
    res = run_workflow(wf, force, sys.stderr.isatty() if progress is None else progress,
                       echo=lambda s: click.echo(s, err=True))
    s = (res.folder / "run-report.md")
    click.echo(f"{len(res.failures)} failed" if res.failures else "all steps done", err=True)
    click.echo(str(s))
    if res.failures:
        for f in res.failures:
            click.echo(f"geoseg: error: {f.error}", err=True)
        raise SystemExit(1)


@click.command()
@click.argument("folder", type=click.Path(file_okay=False))
@debug_option
def status(folder: str) -> None:
    """The run ledger of FOLDER: per scene and step, done / failed / stale / interrupted, with timings."""
    from geoseg.workflows import status as read_status

    runs, rows = read_status(folder)
    for r in runs[-3:]:
        click.echo(f"run {r['id']}: {r['status']} (geoseg {r['version']}, {r['cluster']}"
                   + (f", dashboard {r['dashboard']}" if r.get("dashboard") else "") + ")")
    width = max((len(r["scene"]) for r in rows), default=5)
    for r in rows:
        secs = "" if r["seconds"] is None else f"{r['seconds']:.1f} s"
        chunks = "" if not r["chunks"] else f"{r['chunks']} chunks" + (
            f" ({r['chunks_resumed']} resumed)" if r["chunks_resumed"] else "")
        click.echo(f"{r['scene']:<{width}}  {r['step']:<9}  {r['status']:<11}  {r['finished']:<19}  {secs:>8}  "
                   f"{chunks}  {r['why']}".rstrip())
