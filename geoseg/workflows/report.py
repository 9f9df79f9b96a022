"""The run report (``run-report.json`` and ``run-report.md`` in the run folder)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from geoseg.io.output import atomic_write_text


def _rel(path: str, folder: Path) -> str:
    return os.path.relpath(path, folder)


def write_run_report(wf, res, stac: list[Path]) -> dict:
    """Write the run's JSON and Markdown reports; returns the summary kept in the ledger."""
    folder = res.folder
    scenes: dict[str, dict] = {}
    for r in res.results:
        s = scenes.setdefault(r.scene, {"scene": r.scene, "name": r.name, "steps": {}})
        s["steps"][r.step] = {
            "status": r.status, "reason": r.reason,
            "seconds": None if r.seconds is None else round(r.seconds, 3),
            "outputs": [_rel(o, folder) for o in r.outputs], "error": r.error,
            "chunks": r.chunks, "chunks_resumed": r.chunks_resumed,
        }
    predicted = [r for r in res.results if r.step == "predict" and r.status == "done"]
    predict_s = sum(r.seconds or 0 for r in predicted)
    mpx = sum(r.pixels for r in predicted) / 1e6
    summary = {
        "scenes": len(scenes),
        "steps_run": sum(r.status == "done" for r in res.results),
        "steps_skipped": sum(r.status == "skipped" for r in res.results),
        "steps_failed": len(res.failures),
        "steps_blocked": sum(r.status == "blocked" for r in res.results),
        "seconds": round(res.seconds, 3),
        "megapixels_predicted": round(mpx, 3),
        "predict_megapixels_per_second": round(mpx / predict_s, 3) if predict_s else None,
        "chunks": sum(r.chunks or 0 for r in predicted),
        "chunks_resumed": sum(r.chunks_resumed or 0 for r in predicted),
    }
    report = {
        "run": res.run, "workflow": str(wf.path), "model": wf.model, "cluster": res.cluster,
        "dashboard": res.dashboard, "summary": summary,
        "failures": [{"scene": r.scene, "step": r.step, "error": r.error} for r in res.failures],
        "stac": [_rel(str(p), folder) for p in stac],
        "scenes": list(scenes.values()),
    }
    atomic_write_text(folder / "run-report.json", json.dumps(report, indent=2) + "\n")
    lines = [f"# geoseg run {res.run}", "", f"- workflow: `{wf.path}`", f"- model: `{wf.model}`",
             f"- cluster: {res.cluster}" + (f" (dashboard {res.dashboard})" if res.dashboard else ""),
             f"- {summary['scenes']} scene{'s' if summary['scenes'] != 1 else ''}; steps run {summary['steps_run']}, skipped {summary['steps_skipped']}, "
             f"failed {summary['steps_failed']}, blocked {summary['steps_blocked']}",
             f"- {summary['seconds']:.1f} s in all; predicted {mpx:.2f} Mpx"
             + (f" at {summary['predict_megapixels_per_second']:.2f} Mpx/s" if predict_s else ""), ""]
    if res.failures:
        lines += ["## Failures", ""] + [f"- {Path(r.scene).name} {r.step}: {r.error}" for r in res.failures] + [""]
    lines += ["## Scenes", "", "| scene | step | status | seconds | chunks | outputs | why |", "|---|---|---|---|---|---|---|"]
    for s in scenes.values():
        for step, d in s["steps"].items():
            chunks = "" if not d["chunks"] else f"{d['chunks']}" + (
                f" ({d['chunks_resumed']} resumed)" if d["chunks_resumed"] else "")
            links = ", ".join(f"[{Path(o).name}]({o})" for o in d["outputs"])
            secs = "" if d["seconds"] is None else f"{d['seconds']:.1f}"
            why = (d["error"] or d["reason"] or "").replace("|", "\\|")
            lines.append(f"| {s['name']} | {step} | {d['status']} | {secs} | {chunks} | {links} | {why} |")
    atomic_write_text(folder / "run-report.md", "\n".join(lines) + "\n")
    return summary
