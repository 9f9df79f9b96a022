"""report.md and report.html for instance and panoptic benchmarks (COCO, Cityscapes instances, COCO and
Cityscapes panoptic): titled tables, the settings and what the figures mean."""

from __future__ import annotations

import html as _html

STAT_NOTES = [
    ("AP", "average precision over IoU thresholds 0.50:0.95 (COCO: 101-point interpolation; Cityscapes: its own "
           "integration of the precision-recall curve)"),
    ("AP50 / AP75", "average precision at IoU 0.50 / 0.75"),
    ("APs / APm / APl", "AP of small (< 32² px), medium and large (> 96² px) objects; COCO takes a detection's "
                        "area from its box when the results carry one (see --segm-area)"),
    ("AR1 / AR10 / AR100", "recall with at most 1 / 10 / 100 detections per image"),
]


def _fmt(v) -> str:
    return "–" if v is None else f"{v:.4f}"


def _tables(report: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    inst = report["instances"]
    out = []
    kinds = [k for k in ("segm", "bbox") if inst.get(k)]
    if kinds:
        keys = list(inst[kinds[0]])
        out.append(("COCOeval statistics", ["", *keys], [[k, *[_fmt(inst[k][s]) for s in keys]] for k in kinds]))
        head = ["id", "class", *[f"{k} AP" for k in kinds]]
        out.append(("Per class", head, [[str(c["id"]), c["name"], *[_fmt(c.get(f"{k}_AP")) for k in kinds]]
                                        for c in inst["per_class"]]))
    else:
        out.append(("Average precision", ["", "AP", "AP50"], [["all classes", _fmt(inst["AP"]), _fmt(inst["AP50"])]]))
        out.append(("Per class", ["class", "AP", "AP50"], [[c["name"], _fmt(c["AP"]), _fmt(c["AP50"])]
                                                         for c in inst["per_class"]]))
    return out


def markdown(report: dict) -> str:
    return page_markdown(report, _tables(report), STAT_NOTES)


def html(report: dict) -> str:
    return page_html(report, _tables(report), STAT_NOTES)


def panoptic_markdown(report: dict) -> str:
    from geoseg.evaluation.report import PANOPTIC_NOTES, panoptic_tables

    return page_markdown(report, panoptic_tables(report["panoptic"]), PANOPTIC_NOTES)


def panoptic_html(report: dict) -> str:
    from geoseg.evaluation.report import PANOPTIC_NOTES, panoptic_tables

    return page_html(report, panoptic_tables(report["panoptic"]), PANOPTIC_NOTES)


def page_markdown(report: dict, tables, notes) -> str:
    b = report["benchmark"]
    lines = [f"# geoseg benchmark report: {b['adapter']}", "",
             f"{len(report.get('inputs', []))} images · geoseg {report.get('geoseg_version', '')}", ""]
    for title, head, rows in tables:
        lines += [f"## {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        lines.append("")
    lines += ["Settings: " + ", ".join(f"{k}={v}" for k, v in b.items()), "",
              "What the figures mean:", *[f"- {k}: {v}" for k, v in notes], ""]
    return "\n".join(lines)


def page_html(report: dict, tables, notes) -> str:
    b = report["benchmark"]
    body = []
    for title, head, rows in tables:
        body.append(f"<h2>{_html.escape(title)}</h2><table><tr>" + "".join(f"<th>{_html.escape(h)}</th>" for h in head)
                    + "</tr>" + "".join("<tr>" + "".join(f"<td>{_html.escape(c)}</td>" for c in r) + "</tr>"
                                        for r in rows) + "</table>")
    notes = "".join(f"<li><b>{_html.escape(k)}</b>: {_html.escape(v)}</li>" for k, v in notes)
    settings = _html.escape(", ".join(f"{k}={v}" for k, v in b.items()))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>geoseg benchmark report: {_html.escape(b['adapter'])}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:64em}}table{{border-collapse:collapse;margin:.5em 0}}
td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:right}}td:first-child{{text-align:left}}</style></head>
<body><h1>geoseg benchmark report: {_html.escape(b['adapter'])}</h1>
<p>{len(report.get('inputs', []))} images · geoseg {_html.escape(report.get('geoseg_version', ''))}</p>
{''.join(body)}
<h2>What the figures mean</h2><ul>{notes}</ul><p><code>{settings}</code></p>
</body></html>
"""
