"""Accuracy reports: ``report.json`` (versioned schema), ``report.md`` and a self-contained ``report.html``.

``report.json`` schema, version 1 (all areas in m², counts in pixels)::

    schema_version   1
    geoseg_version   str
    inputs           [{scene, prediction, reference}]
    crs              CRS of the first scene's grid
    settings         {ignore, aoi, iou_threshold, grid_size, class_field}
    classes          [{id, name, color, iou, iou_area, precision, recall, f1,
                       tp_px, fp_px, fn_px, tp_m2, fp_m2, fn_m2}]
    overall          {pixel_accuracy, mean_accuracy, mean_iou, fw_iou, mean_iou_area}
    confusion_px     K x K, rows = reference class, columns = predicted class
    confusion_m2     the same, in m²
    objects          {class name: {tp, fp, fn, precision, recall, f1, iou_threshold}}  (when computed)
    scenes           [{scene, prediction, reference, crs, overall, classes, confusion_px, confusion_m2, objects}]

Undefined values (a class absent from both sides) are ``null``.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path

import numpy as np

from geoseg import __version__
from geoseg.classes import ClassList
from geoseg.metrics import Confusion, area_weighted_mean_iou, class_scores, overall_scores

SCHEMA_VERSION = 1


def _num(v):
    if v is None:
        return None
    v = float(v)
    return None if math.isnan(v) else v


def _block(conf: Confusion, classes: ClassList, objects: dict | None) -> dict:
    ids = [c.id for c in classes]
    px, m2 = conf.px[np.ix_(ids, ids)], conf.m2[np.ix_(ids, ids)]
    sp, sa = class_scores(px), class_scores(m2)
    overall = {k: _num(v) for k, v in overall_scores(px).items()}
    overall["mean_iou_area"] = _num(area_weighted_mean_iou(m2))
    rows = []
    for n, c in enumerate(classes):
        rows.append({
            "id": c.id, "name": c.name, "color": c.color,
            "iou": _num(sp["iou"][n]), "iou_area": _num(sa["iou"][n]),
            "precision": _num(sp["precision"][n]), "recall": _num(sp["recall"][n]), "f1": _num(sp["f1"][n]),
            "tp_px": int(sp["tp"][n]), "fp_px": int(sp["fp"][n]), "fn_px": int(sp["fn"][n]),
            "tp_m2": float(sa["tp"][n]), "fp_m2": float(sa["fp"][n]), "fn_m2": float(sa["fn"][n]),
        })
    out = {"overall": overall, "classes": rows, "confusion_px": px.astype(int).tolist(),
           "confusion_m2": m2.tolist()}
    if objects:
        out["objects"] = objects
    return out


def build_report(results, classes: ClassList, options) -> dict:
    total = Confusion(results[0].conf.num_classes)
    objects: dict = {}
    for r in results:
        total += r.conf
        for name, o in (r.objects or {}).items():
            acc = objects.setdefault(name, {"tp": 0, "fp": 0, "fn": 0, "iou_threshold": o["iou_threshold"]})
            for k in ("tp", "fp", "fn"):
                acc[k] += o[k]
    for o in objects.values():
        p = o["tp"] / (o["tp"] + o["fp"]) if o["tp"] + o["fp"] else 0.0
        rc = o["tp"] / (o["tp"] + o["fn"]) if o["tp"] + o["fn"] else 0.0
        o.update(precision=p, recall=rc, f1=2 * p * rc / (p + rc) if p + rc else 0.0)
    report = {
        "schema_version": SCHEMA_VERSION,
        "geoseg_version": __version__,
        "inputs": [{"scene": r.name, "prediction": r.prediction, "reference": r.reference} for r in results],
        "crs": results[0].crs,
        "settings": {"ignore": list(options.ignore), "aoi": options.aoi, "iou_threshold": options.iou_threshold,
                     "grid_size": options.grid_size, "class_field": options.class_field},
        **_block(total, classes, objects),
        "scenes": [{"scene": r.name, "prediction": r.prediction, "reference": r.reference, "crs": r.crs,
                    **_block(r.conf, classes, r.objects)} for r in results],
    }
    return report


def _fmt(v, digits=4) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def markdown(report: dict) -> str:
    o = report["overall"]
    lines = ["# geoseg accuracy report", "",
             f"Scenes: {len(report['scenes'])} · CRS: {report['crs']} · geoseg {report['geoseg_version']}", "",
             "| pixel accuracy | mean accuracy | mean IoU | frequency-weighted IoU | area-weighted mean IoU |",
             "|---|---|---|---|---|",
             f"| {_fmt(o['pixel_accuracy'])} | {_fmt(o['mean_accuracy'])} | {_fmt(o['mean_iou'])} | "
             f"{_fmt(o['fw_iou'])} | {_fmt(o['mean_iou_area'])} |", "",
             "| class | IoU | IoU (area) | precision | recall | F1 | TP m² | FP m² | FN m² |",
             "|---|---|---|---|---|---|---|---|---|"]
    for c in report["classes"]:
        lines.append(f"| {c['name']} | {_fmt(c['iou'])} | {_fmt(c['iou_area'])} | {_fmt(c['precision'])} | "
                     f"{_fmt(c['recall'])} | {_fmt(c['f1'])} | {c['tp_m2']:.1f} | {c['fp_m2']:.1f} | {c['fn_m2']:.1f} |")
    if report.get("objects"):
        lines += ["", "| objects | TP | FP | FN | precision | recall | F1 |", "|---|---|---|---|---|---|---|"]
        for name, s in report["objects"].items():
            lines.append(f"| {name} (IoU ≥ {s['iou_threshold']}) | {s['tp']} | {s['fp']} | {s['fn']} | "
                         f"{_fmt(s['precision'])} | {_fmt(s['recall'])} | {_fmt(s['f1'])} |")
    if len(report["scenes"]) > 1:
        lines += ["", "| scene | pixel accuracy | mean IoU | area-weighted mean IoU |", "|---|---|---|---|"]
        for s in report["scenes"]:
            lines.append(f"| {s['scene']} | {_fmt(s['overall']['pixel_accuracy'])} | {_fmt(s['overall']['mean_iou'])}"
                         f" | {_fmt(s['overall']['mean_iou_area'])} |")
    lines += ["", "Inputs:", *[f"- {i['prediction']} vs {i['reference']}" for i in report["inputs"]], ""]
    return "\n".join(lines)


def _figures(report: dict) -> tuple[str, str]:
    # Figures without pyplot: a library must not switch the caller's matplotlib backend.
    from matplotlib.figure import Figure

    names = [c["name"] for c in report["classes"]]
    cm = np.asarray(report["confusion_px"], dtype=float)
    rows = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig = Figure(figsize=(1.2 + 0.6 * len(names), 1 + 0.6 * len(names)))
    ax = fig.subplots()
    im = ax.imshow(rows, cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("reference")
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, f"{rows[i, j]:.2f}", ha="center", va="center", color="w" if rows[i, j] < 0.6 else "k",
                    fontsize=8)
    fig.colorbar(im, ax=ax, label="share of reference pixels")
    fig.tight_layout()
    heat = _png(fig)
    fig = Figure(figsize=(6, 0.5 + 0.4 * len(names)))
    ax = fig.subplots()
    ious = [c["iou"] or 0 for c in report["classes"]]
    ax.barh(names, ious, color=[c["color"] for c in report["classes"]], edgecolor="k")
    ax.set_xlim(0, 1)
    ax.set_xlabel("IoU")
    ax.invert_yaxis()
    fig.tight_layout()
    bars = _png(fig)
    return heat, bars


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return base64.b64encode(buf.getvalue()).decode()


def html_report(report: dict) -> str:
    heat, bars = _figures(report)
    md_rows = markdown(report)
    table = "".join(
        f"<tr><td>{html.escape(c['name'])}</td>" + "".join(
            f"<td>{_fmt(c[k])}</td>" for k in ("iou", "iou_area", "precision", "recall", "f1"))
        + f"<td>{c['tp_m2']:.1f}</td><td>{c['fp_m2']:.1f}</td><td>{c['fn_m2']:.1f}</td></tr>"
        for c in report["classes"])
    o = report["overall"]
    settings = html.escape(json.dumps(report["settings"]))
    inputs = "".join(f"<li>{html.escape(i['prediction'])} vs {html.escape(i['reference'])}</li>"
                     for i in report["inputs"])
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>geoseg accuracy report</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:60em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:right}}td:first-child{{text-align:left}}</style></head>
<body><h1>geoseg accuracy report</h1>
<p>pixel accuracy {_fmt(o['pixel_accuracy'])} · mean accuracy {_fmt(o['mean_accuracy'])} ·
mean IoU {_fmt(o['mean_iou'])} · frequency-weighted IoU {_fmt(o['fw_iou'])} ·
area-weighted mean IoU {_fmt(o['mean_iou_area'])}</p>
<table><tr><th>class</th><th>IoU</th><th>IoU (area)</th><th>precision</th><th>recall</th><th>F1</th>
<th>TP m²</th><th>FP m²</th><th>FN m²</th></tr>{table}</table>
<h2>Confusion matrix</h2><img alt="confusion matrix" src="data:image/png;base64,{heat}">
<h2>IoU per class</h2><img alt="IoU per class" src="data:image/png;base64,{bars}">
<h2>Inputs and settings</h2><ul>{inputs}</ul><p><code>{settings}</code></p>
<details><summary>Markdown report</summary><pre>{html.escape(md_rows)}</pre></details>
</body></html>
"""


def write_reports(report: dict, results, classes: ClassList, folder: Path) -> None:
    (folder / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (folder / "report.md").write_text(markdown(report))
    (folder / "report.html").write_text(html_report(report))
