"""Accuracy reports: ``report.json`` (versioned schema), ``report.md`` and a self-contained ``report.html``.

``report.json`` schema, version 1 (all areas in m², counts in pixels)::

    schema_version   1
    geoseg_version   str
    inputs           [{scene, prediction, reference}]
    crs              CRS of the first scene's grid
    settings         {ignore, aoi, iou_threshold, min_reference_px, grid_size, class_field}
    classes          [{id, name, color, foreground, iou, iou_area, precision, recall, f1,
                       tp_px, fp_px, fn_px, tp_m2, fp_m2, fn_m2}]
    overall          {pixel_accuracy, mean_accuracy, mean_iou, fw_iou, mean_iou_area,
                      mean_iou_foreground, mean_iou_area_foreground}  (foreground: every class but background)
    confusion_px     K x K, rows = reference class, columns = predicted class
    confusion_m2     the same, in m²
    objects          {class name: {tp, fp, fn, precision, recall, f1, iou_threshold, f1_ci95}}  (when computed;
                     counts summed over scenes; f1_ci95: [low, high], a 95% bootstrap interval over scenes,
                     with two scenes or more, else null)
    scenes           [{scene, prediction, reference, crs, overall, classes, confusion_px, confusion_m2, objects,
                       panoptic}]
    panoptic         (evaluate --panoptic) {All, Things, Stuff: {pq, sq, rq, n}, per_class: [{id, name, isthing,
                     pq, sq, rq, tp, fp, fn, iou_sum}]}: panoptic quality with the COCO panoptic scorer's rules,
                     segments counted over all scenes (geoseg.evaluation.panoptic)

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

from geoseg.classes import ClassList
from geoseg.evaluation.metrics import (
    Confusion,
    area_weighted_mean_iou,
    class_scores,
    object_f1_interval,
    overall_scores,
)
from geoseg.version import __version__

SCHEMA_VERSION = 1


def _num(v):
    if v is None:
        return None
    v = float(v)
    return None if math.isnan(v) else v


def _nanmean(values) -> float | None:
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    return sum(vals) / len(vals) if vals else None


def _block(conf: Confusion, classes: ClassList, objects: dict | None, outside_counts: bool = False) -> dict:
    """Scores of ``classes``; ``outside_counts``: pixels of other rows and columns of ``conf`` count as errors."""
    ids = [c.id for c in classes]
    px, m2 = conf.px[np.ix_(ids, ids)], conf.m2[np.ix_(ids, ids)]
    if outside_counts:
        sp = {k: v[ids] for k, v in class_scores(conf.px).items()}
        sa = {k: v[ids] for k, v in class_scores(conf.m2).items()}
        overall = {k: _num(v) for k, v in overall_scores(conf.px, ids).items()}
    else:
        sp, sa = class_scores(px), class_scores(m2)
        overall = {k: _num(v) for k, v in overall_scores(px).items()}
    overall["mean_iou_area"] = _num(area_weighted_mean_iou(conf.m2, ids) if outside_counts else area_weighted_mean_iou(m2))
    # The headline: background dominates mean and frequency-weighted IoU, so foreground classes lead.
    fg = [n for n, c in enumerate(classes) if c.vectorize]
    overall["mean_iou_foreground"] = _nanmean([sp["iou"][n] for n in fg])
    overall["mean_iou_area_foreground"] = _nanmean([sa["iou"][n] for n in fg])
    rows = []
    for n, c in enumerate(classes):
        rows.append({
            "id": c.id, "name": c.name, "color": c.color, "foreground": bool(c.vectorize),
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


def build_report(results, classes: ClassList, options, outside_counts: bool = False) -> dict:
    total = Confusion(results[0].conf.num_classes)
    objects: dict = {}
    for r in results:
        total += r.conf
        for name, o in (r.objects or {}).items():
            acc = objects.setdefault(name, {"tp": 0, "fp": 0, "fn": 0, "iou_threshold": o["iou_threshold"]})
            for k in ("tp", "fp", "fn"):
                acc[k] += o[k]
    for name, o in objects.items():
        p = o["tp"] / (o["tp"] + o["fp"]) if o["tp"] + o["fp"] else 0.0
        rc = o["tp"] / (o["tp"] + o["fn"]) if o["tp"] + o["fn"] else 0.0
        per_scene = [[r.objects[name][k] for k in ("tp", "fp", "fn")] for r in results if name in (r.objects or {})]
        ci = object_f1_interval(per_scene)
        o.update(precision=p, recall=rc, f1=2 * p * rc / (p + rc) if p + rc else 0.0,
                 f1_ci95=None if ci is None else list(ci))
    report = {
        "schema_version": SCHEMA_VERSION,
        "geoseg_version": __version__,
        "inputs": [{"scene": r.name, "prediction": r.prediction, "reference": r.reference} for r in results],
        "crs": results[0].crs,
        "settings": {"ignore": list(options.ignore), "aoi": options.aoi, "iou_threshold": options.iou_threshold,
                     "min_reference_px": options.min_reference_px,
                     "grid_size": options.grid_size, "class_field": options.class_field},
        **_block(total, classes, objects, outside_counts),
        "scenes": [{"scene": r.name, "prediction": r.prediction, "reference": r.reference, "crs": r.crs,
                    **_block(r.conf, classes, r.objects, outside_counts)} for r in results],
    }
    return report


def _fmt(v, digits=4) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _interval(ob: dict) -> str:
    ci = ob.get("f1_ci95")
    return "" if not ci else f", 95% interval over scenes {_fmt(ci[0], 3)}–{_fmt(ci[1], 3)}"


def _ci_cell(ob: dict) -> str:
    ci = ob.get("f1_ci95")
    return "–" if not ci else f"{_fmt(ci[0])}–{_fmt(ci[1])}"


def headline(report: dict) -> list[str]:
    """The summary a reader sees first: foreground classes and objects; background after them."""
    o = report["overall"]
    fg = [c for c in report["classes"] if c.get("foreground", True)]
    bg = [c for c in report["classes"] if not c.get("foreground", True)]
    lines = [f"Foreground mean IoU {_fmt(o.get('mean_iou_foreground'), 3)} per pixel, "
             f"{_fmt(o.get('mean_iou_area_foreground'), 3)} by ground area"
             + "".join(f"; {c['name']} IoU {_fmt(c['iou'], 3)} (area {_fmt(c['iou_area'], 3)})" for c in fg)]
    for name, ob in (report.get("objects") or {}).items():
        lines.append(f"{name} objects at IoU ≥ {ob['iou_threshold']}: F1 {_fmt(ob['f1'], 3)}{_interval(ob)} "
                     f"(TP {ob['tp']}, FP {ob['fp']}, FN {ob['fn']})")
    if bg:
        lines.append("Background, shown apart because it dominates pixel counts: "
                     + "; ".join(f"{c['name']} IoU {_fmt(c['iou'], 3)}" for c in bg))
    return lines


METRIC_NOTES = [
    ("IoU", "intersection over union of a class's predicted and reference pixels: TP / (TP + FP + FN)"),
    ("IoU (area)", "the same with every pixel weighted by its ground area (differs from IoU in geographic CRSs)"),
    ("foreground mean IoU", "the mean IoU of the classes that are not background: the headline figure"),
    ("precision", "share of predicted pixels of a class that are that class in the reference: TP / (TP + FP)"),
    ("recall", "share of reference pixels of a class that were predicted as it: TP / (TP + FN)"),
    ("F1", "harmonic mean of precision and recall"),
    ("object F1", "objects matched one-to-one at polygon IoU ≥ the threshold (the SpaceNet rule); F1 of the matches"),
    ("pixel accuracy", "share of all scored pixels predicted right (dominated by background)"),
    ("mean IoU", "mean of the per-class IoUs, background included (FCN paper)"),
    ("frequency-weighted IoU", "per-class IoU weighted by the class's reference frequency (FCN paper; mostly "
                               "background)"),
]


def markdown(report: dict) -> str:
    o = report["overall"]
    lines = ["# geoseg accuracy report", "",
             f"Scenes: {len(report['scenes'])} · CRS: {report['crs']} · geoseg {report['geoseg_version']}", "",
             *[f"**{line}**" if i == 0 else line for i, line in enumerate(headline(report))], "",
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
        lines += ["", "| objects | TP | FP | FN | precision | recall | F1 | F1, 95% interval over scenes |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, s in report["objects"].items():
            lines.append(f"| {name} (IoU ≥ {s['iou_threshold']}) | {s['tp']} | {s['fp']} | {s['fn']} | "
                         f"{_fmt(s['precision'])} | {_fmt(s['recall'])} | {_fmt(s['f1'])} | {_ci_cell(s)} |")
    if len(report["scenes"]) > 1:
        lines += ["", "| scene | pixel accuracy | mean IoU | area-weighted mean IoU |", "|---|---|---|---|"]
        for s in report["scenes"]:
            lines.append(f"| {s['scene']} | {_fmt(s['overall']['pixel_accuracy'])} | {_fmt(s['overall']['mean_iou'])}"
                         f" | {_fmt(s['overall']['mean_iou_area'])} |")
    lines += _benchmark_md(report)
    if report.get("panoptic"):
        lines += ["", *panoptic_markdown(report["panoptic"])]
        if len(report["scenes"]) > 1:
            lines += ["", "| scene | PQ | SQ | RQ |", "|---|---|---|---|"]
            lines += [f"| {s['scene']} | {_fmt(s['panoptic']['All']['pq'])} | {_fmt(s['panoptic']['All']['sq'])} | "
                      f"{_fmt(s['panoptic']['All']['rq'])} |" for s in report["scenes"] if s.get("panoptic")]
    lines += ["", "Inputs:", *[f"- {i['prediction']} vs {i['reference']}" for i in report["inputs"]], "",
              "What the figures mean:", *[f"- {k}: {v}" for k, v in METRIC_NOTES], ""]
    return "\n".join(lines)


def _benchmark_md(report: dict) -> list[str]:
    """A benchmark's own scores (Cityscapes: iIoU per class and the categories), when the report has them."""
    if "categories" not in report:
        return []
    o = report["overall"]
    lines = ["", f"Cityscapes: mean IoU {_fmt(o['mean_iou'])}, mean iIoU {_fmt(o.get('mean_iiou'))}; categories: "
             f"IoU {_fmt(o.get('category_iou'))}, iIoU {_fmt(o.get('category_iiou'))}", "",
             "| class | IoU | iIoU |", "|---|---|---|"]
    lines += [f"| {c['name']} | {_fmt(c['iou'])} | {_fmt(c.get('iiou'))} |" for c in report["classes"]]
    lines += ["", "| category | IoU | iIoU |", "|---|---|---|"]
    lines += [f"| {c['name']} | {_fmt(c['iou'])} | {_fmt(c['iiou'])} |" for c in report["categories"]]
    return lines


def _figures(report: dict) -> tuple[str, str]:
    """The confusion heat map and the IoU bars as data URIs (SVG, see ``geoseg.evaluation.figures``)."""
    from geoseg.evaluation.figures import confusion_svg, data_uri, iou_bars_svg

    names = [c["name"] for c in report["classes"]]
    heat = confusion_svg(names, report["confusion_px"])
    bars = iou_bars_svg(names, [c["iou"] for c in report["classes"]], [c["color"] for c in report["classes"]])
    return data_uri(heat), data_uri(bars)


ERROR_COLOURS = {"TP": (26, 150, 65), "FP": (215, 25, 28), "FN": (43, 131, 186)}


def error_map_png(result) -> str | None:
    """Where the foreground errors are: each map cell coloured by its TP (green), FP (red) and FN (blue) shares."""
    if not result.map_cell or not result.errors:
        return None
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    f = result.map_cell
    h, w = -(-result.grid.height // f), -(-result.grid.width // f)
    rgba = np.zeros((h, w, 4))
    colours = np.array(list(ERROR_COLOURS.values()), dtype=float) / 255
    for (r, c), counts in result.errors.items():
        counts = np.asarray(counts, dtype=float)
        rgba[r, c, :3] = counts @ colours / counts.sum()
        rgba[r, c, 3] = 1.0
    aspect = h / w
    fig = Figure(figsize=(6, max(1.5, min(9, 6 * aspect)) + 0.6))
    ax = fig.subplots()
    ax.set_facecolor("#f4f4f4")
    ax.imshow(rgba, interpolation="nearest", extent=(0, result.grid.width, result.grid.height, 0))
    ax.set_xlabel("column (px)")
    ax.set_ylabel("row (px)")
    handles = [Patch(color=np.array(v) / 255, label=k)
               for k, v in ERROR_COLOURS.items()]
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3, frameon=False)
    ax.set_title(f"{result.name}: foreground TP / FP / FN ({f}x{f} px cells)", fontsize=10)
    fig.tight_layout()
    return _png(fig)


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return base64.b64encode(buf.getvalue()).decode()


MAX_MAPS = 12


def html_report(report: dict, results=()) -> str:
    heat, bars = _figures(report)
    md_rows = markdown(report)
    table = "".join(
        f"<tr><td>{html.escape(c['name'])}"
        f"{'' if c.get('foreground', True) or c['name'] == 'background' else ' (background)'}</td>" + "".join(
            f"<td>{_fmt(c[k])}</td>" for k in ("iou", "iou_area", "precision", "recall", "f1"))
        + f"<td>{c['tp_m2']:.1f}</td><td>{c['fp_m2']:.1f}</td><td>{c['fn_m2']:.1f}</td></tr>"
        for c in report["classes"])
    o = report["overall"]
    settings = html.escape(json.dumps(report["settings"]))
    inputs = "".join(f"<li>{html.escape(i['prediction'])} vs {html.escape(i['reference'])}</li>"
                     for i in report["inputs"])
    head = headline(report)
    lead = f"<p class=lead>{html.escape(head[0])}</p>" + "".join(f"<p>{html.escape(x)}</p>" for x in head[1:])
    objects = ""
    if report.get("objects"):
        rows = "".join(
            f"<tr><td>{html.escape(n)} (IoU ≥ {ob['iou_threshold']})</td><td>{ob['tp']}</td><td>{ob['fp']}</td>"
            f"<td>{ob['fn']}</td><td>{_fmt(ob['precision'])}</td><td>{_fmt(ob['recall'])}</td>"
            f"<td>{_fmt(ob['f1'])}</td><td>{html.escape(_ci_cell(ob))}</td></tr>" for n, ob in report["objects"].items())
        objects = ("<h2>Objects</h2><table id=objects><tr><th>class</th><th>TP</th><th>FP</th><th>FN</th>"
                   f"<th>precision</th><th>recall</th><th>F1</th><th>F1, 95% interval over scenes</th></tr>"
                   f"{rows}</table>")
    maps = [(r.name, error_map_png(r)) for r in list(results)[:MAX_MAPS]]
    maps_html = "".join(f'<figure><img alt="error map of {html.escape(n)}" src="data:image/png;base64,{png}">'
                        f"</figure>" for n, png in maps if png)
    if maps_html:
        more = f"<p>First {MAX_MAPS} of {len(results)} scenes.</p>" if len(results) > MAX_MAPS else ""
        maps_html = ("<h2>Where the errors are</h2><p>Green: foreground predicted right (TP); red: predicted but "
                     "not in the reference (FP); blue: in the reference but missed (FN). Each cell is coloured by "
                     f"its mix of the three; empty cells had no foreground.</p>{more}{maps_html}")
    notes = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in METRIC_NOTES)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>geoseg accuracy report</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:64em}}table{{border-collapse:collapse;margin:.5em 0}}
td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:right}}td:first-child{{text-align:left}}
.lead{{font-size:1.3em;font-weight:bold}}img{{max-width:100%}}figure{{margin:1em 0}}</style></head>
<body><h1>geoseg accuracy report</h1>
<p>{len(report['scenes'])} scene{'s' if len(report['scenes']) != 1 else ''} · CRS {html.escape(str(report['crs']))}
· geoseg {html.escape(report['geoseg_version'])}</p>
{lead}
<h2>Classes</h2>
<table id=classes><tr><th>class</th><th>IoU</th><th>IoU (area)</th><th>precision</th><th>recall</th><th>F1</th>
<th>TP m²</th><th>FP m²</th><th>FN m²</th></tr>{table}</table>
{objects}
<p>All classes: pixel accuracy {_fmt(o['pixel_accuracy'])} · mean accuracy {_fmt(o['mean_accuracy'])} ·
mean IoU {_fmt(o['mean_iou'])} · frequency-weighted IoU {_fmt(o['fw_iou'])} ·
area-weighted mean IoU {_fmt(o['mean_iou_area'])}</p>
<h2>Confusion matrix</h2><img alt="confusion matrix" src="{heat}">
<h2>IoU per class</h2><img alt="IoU per class" src="{bars}">
{maps_html}
{_benchmark_html(report)}
{panoptic_html(report["panoptic"]) if report.get("panoptic") else ""}
<h2>What the figures mean</h2><ul>{notes}</ul>
<h2>Inputs and settings</h2><ul>{inputs}</ul><p><code>{settings}</code></p>
<details><summary>Markdown report</summary><pre>{html.escape(md_rows)}</pre></details>
</body></html>
"""


def _benchmark_html(report: dict) -> str:
    if "categories" not in report:
        return ""
    rows = lambda items: "".join(  # noqa: E731
        f"<tr><td>{html.escape(c['name'])}</td><td>{_fmt(c['iou'])}</td><td>{_fmt(c.get('iiou'))}</td></tr>"
        for c in items)
    o = report["overall"]
    return (f"<h2>Cityscapes scores</h2><p>mean IoU {_fmt(o['mean_iou'])} · mean iIoU {_fmt(o.get('mean_iiou'))} · "
            f"category IoU {_fmt(o.get('category_iou'))} · category iIoU {_fmt(o.get('category_iiou'))}</p>"
            f"<table id=iiou><tr><th>class</th><th>IoU</th><th>iIoU</th></tr>{rows(report['classes'])}</table>"
            f"<table id=categories><tr><th>category</th><th>IoU</th><th>iIoU</th></tr>{rows(report['categories'])}"
            "</table>")


def json_text(obj) -> str:
    """``obj`` as JSON indented by two spaces down to the second level; below it, one line per item.

    The content is ``json.dumps(obj, indent=2)``'s; only the layout differs: a report then reads
    as one line per class, per scene or per matrix row, and those lines go through the C encoder
    (the indenting encoder is pure Python: a 200-frame Cityscapes report took 1.3 s to write).
    """
    return _json(obj, 0) + "\n"


def _json(obj, depth: int) -> str:
    pad = "  " * (depth + 1)
    if depth >= 2 and not (isinstance(obj, (list, tuple)) and obj and isinstance(obj[0], (list, tuple))):
        return json.dumps(obj)
    if isinstance(obj, dict) and obj:
        items = (f"{pad}{json.dumps(k if isinstance(k, str) else json.dumps(k))}: {_json(v, depth + 1)}"
                 for k, v in obj.items())
        return "{\n" + ",\n".join(items) + "\n" + "  " * depth + "}"
    if isinstance(obj, (list, tuple)) and any(isinstance(v, (dict, list, tuple)) for v in obj):
        return "[\n" + ",\n".join(pad + _json(v, depth + 1) for v in obj) + "\n" + "  " * depth + "]"
    return json.dumps(obj)


def write_reports(report: dict, results, classes: ClassList, folder: Path) -> None:
    (folder / "report.json").write_text(json_text(report))
    (folder / "report.md").write_text(markdown(report))
    (folder / "report.html").write_text(html_report(report, results))


PANOPTIC_NOTES = [
    ("PQ", "panoptic quality: sum of matched segments' IoU / (TP + FP/2 + FN/2); segments match at IoU > 0.5"),
    ("SQ", "segmentation quality: mean IoU of the matched segments"),
    ("RQ", "recognition quality: TP / (TP + FP/2 + FN/2), an F1 of the matching"),
    ("Things / Stuff", "countable objects, each its own segment / amorphous classes, one segment per class and "
                       "scene (image); All, Things and Stuff average the classes with any TP, FP or FN"),
    ("VOID and crowd", "unlabelled reference pixels leave the unions; a predicted segment more than half on VOID "
                       "and its class's crowd region is no false positive (the COCO panoptic scorer's rules)"),
]


def panoptic_tables(block: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """The PQ tables of a report's ``panoptic`` block: (title, header, rows) for All / Things / Stuff and per
    class."""
    agg = [[k, _fmt(block[k]["pq"]), _fmt(block[k]["sq"]), _fmt(block[k]["rq"]), str(block[k]["n"])]
           for k in ("All", "Things", "Stuff")]
    per = [[c["name"], "thing" if c["isthing"] else "stuff", _fmt(c["pq"]), _fmt(c["sq"]), _fmt(c["rq"]),
            str(c["tp"]), str(c["fp"]), str(c["fn"])] for c in block["per_class"]]
    return [("Panoptic quality", ["", "PQ", "SQ", "RQ", "classes"], agg),
            ("Per class", ["class", "kind", "PQ", "SQ", "RQ", "TP", "FP", "FN"], per)]


def panoptic_markdown(block: dict) -> list[str]:
    """The PQ tables as markdown lines: All / Things / Stuff, then per class."""
    lines = [f"**Panoptic quality: PQ {_fmt(block['All']['pq'])} (things {_fmt(block['Things']['pq'])}, stuff "
             f"{_fmt(block['Stuff']['pq'])})**", ""]
    for _, head, rows in panoptic_tables(block):
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        lines.append("")
    return lines


def panoptic_html(block: dict) -> str:
    tables = []
    for name, (_, head, rows) in zip(("pq", "pq_classes"), panoptic_tables(block)):
        tables.append(f"<table id={name}><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"
                      + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
                      + "</table>")
    return "<h2>Panoptic quality</h2>" + "".join(tables)
