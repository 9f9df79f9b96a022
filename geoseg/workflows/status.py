"""``geoseg status``: the run ledger read back, per scene and step, with what is stale now."""

from __future__ import annotations

import glob
import os
import time
from pathlib import Path

from geoseg.errors import GeosegError
from geoseg.io.output import pid_alive
from geoseg.workflows.ledger import Ledger


def status(folder: str | os.PathLike) -> tuple[list[dict], list[dict]]:
    """The runs, and for every scene and step its latest state: done, failed, running, interrupted or stale.

    Stale (the step would run again) is judged against the workflow file the last
    run used, when it is still there.
    """
    from geoseg.workflows.config import STEPS, load_workflow
    from geoseg.workflows.run import plan

    ledger = Ledger(Path(folder), create=False)
    try:
        runs = ledger.runs()
        latest = ledger.latest()
        live = {r["id"] for r in runs if r["status"] == "running" and pid_alive(r["pid"])}
        planned = {}
        if runs and os.path.isfile(runs[-1]["workflow"] or ""):
            try:
                planned = {(os.path.realpath(i.scene), i.step): i for i in plan(load_workflow(runs[-1]["workflow"]),
                                                                             ledger)}
            except GeosegError:
                planned = {}
    finally:
        ledger.close()
    rows = []
    for (scene, step), rec in sorted(latest.items(), key=lambda kv: (kv[0][0], STEPS.index(kv[0][1]))):
        state = rec.status
        if state == "running" and rec.run not in live:
            state = "interrupted"
        item = planned.get((scene, step))
        if state == "done" and item is not None and item.action == "run":
            state = "stale"
        saved = None
        if state in ("running", "interrupted") and step == "predict":  # chunks saved so far, for resume
            from geoseg.io.checkpoint import saved_chunks
            from geoseg.io.inputs import output_stem
            from geoseg.workflows.run import CHECKPOINTS

            saved = sum(len(saved_chunks(d))
                        for d in (Path(folder) / CHECKPOINTS).glob(f"{glob.escape(output_stem(scene))}-*"))
        rows.append({
            "scene": Path(scene).name, "step": step, "status": state, "run": rec.run,
            "finished": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(rec.finished)) if rec.finished else "",
            "seconds": rec.seconds, "chunks": rec.chunks, "chunks_resumed": rec.chunks_resumed,
            "why": item.reason if state == "stale" else (
                f"{saved} chunks saved" if saved is not None else (rec.error or "")),
        })
    for (scene, step), item in planned.items():  # scenes that arrived since the last run
        if (scene, step) not in latest:
            rows.append({"scene": Path(scene).name, "step": step, "status": "new", "run": None, "finished": "",
                         "seconds": None, "chunks": None, "chunks_resumed": None, "why": item.reason})
    for r in runs:
        if r["status"] == "running" and r["id"] not in live:
            r["status"] = "interrupted"
    return runs, rows
