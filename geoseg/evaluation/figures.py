"""report.html's two summary figures, a confusion heat map and IoU bars, as SVG written directly.

Why not matplotlib here: the two figures are rectangles and text, and drawing them through
matplotlib cost 2.5 to 4 s per report (its import, then 361 text artists for Cityscapes' 19
classes), longer than scoring 200 Cityscapes frames. SVG is also sharper at any zoom and keeps
its numbers as text. The per-scene error maps stay matplotlib images (``report.error_map_png``).
"""

from __future__ import annotations

import base64
from html import escape

import numpy as np

# A light-to-dark blue ramp (ColorBrewer "Blues", 9 classes; Apache-2.0): share 0 is the lightest.
BLUES = np.array([(247, 251, 255), (222, 235, 247), (198, 219, 239), (158, 202, 225), (107, 174, 214),
                  (66, 146, 198), (33, 113, 181), (8, 81, 156), (8, 48, 107)], dtype=float)
FONT = 'font-family="sans-serif"'


def ramp(share: float) -> str:
    """The ramp's colour at ``share`` in 0..1, interpolated between its nine stops."""
    x = min(max(float(share), 0.0), 1.0) * (len(BLUES) - 1)
    i = min(int(x), len(BLUES) - 2)
    r, g, b = BLUES[i] + (BLUES[i + 1] - BLUES[i]) * (x - i)
    return f"#{round(r):02x}{round(g):02x}{round(b):02x}"


def data_uri(svg: str) -> str:
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()


def _text_width(s: str, size: float) -> float:
    return 0.6 * size * len(s)  # a sans-serif average, enough to reserve room for labels


def confusion_svg(names: list[str], cm) -> str:
    """Rows: reference classes; columns: predicted. Each cell: the share of the row's pixels and the count."""
    cm = np.asarray(cm, dtype=float)
    k = len(names)
    shares = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    cell = 96 if k <= 3 else 64 if k <= 6 else 48
    size = 13 if k <= 3 else 11 if k <= 6 else 9
    left = 30 + max((_text_width(n, 12) for n in names), default=0)
    top = 10
    bottom = 30 + max((_text_width(n, 12) for n in names), default=0) * 0.71  # labels turned 45 degrees
    width, height = left + k * cell + 140, top + k * cell + bottom
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
             f'viewBox="0 0 {width:.0f} {height:.0f}" {FONT}>', f'<rect width="{width:.0f}" height="{height:.0f}" '
             'fill="white"/>']
    for i in range(k):
        y = top + i * cell
        parts.append(f'<text x="{left - 6:.0f}" y="{y + cell / 2:.1f}" font-size="12" text-anchor="end" '
                     f'dominant-baseline="middle">{escape(names[i])}</text>')
        for j in range(k):
            x = left + j * cell
            colour = "white" if shares[i, j] > 0.45 else "black"
            parts.append(f'<rect x="{x:.0f}" y="{y}" width="{cell}" height="{cell}" fill="{ramp(shares[i, j])}" '
                         'stroke="#ddd" stroke-width="0.5"/>'
                         f'<text x="{x + cell / 2:.1f}" y="{y + cell / 2 - size * 0.2:.1f}" font-size="{size}" '
                         f'text-anchor="middle" fill="{colour}">{shares[i, j]:.2f}</text>'
                         f'<text x="{x + cell / 2:.1f}" y="{y + cell / 2 + size * 0.95:.1f}" '
                         f'font-size="{size - 2}" text-anchor="middle" fill="{colour}">{_count(cm[i, j])}</text>')
    base = top + k * cell
    for j, n in enumerate(names):
        x = left + j * cell + cell / 2
        parts.append(f'<text transform="translate({x:.1f},{base + 8}) rotate(-45)" font-size="12" '
                     f'text-anchor="end">{escape(n)}</text>')
    parts.append(f'<text x="{left + k * cell / 2:.0f}" y="{height - 6:.0f}" font-size="13" '
                 'text-anchor="middle">predicted</text>')
    # the colour key: share of the reference class's pixels
    kx, ky, kh = left + k * cell + 24, top, k * cell
    for s in range(20):
        parts.append(f'<rect x="{kx}" y="{ky + kh * (19 - s) / 20:.1f}" width="14" height="{kh / 20 + 0.5:.1f}" '
                     f'fill="{ramp((s + 0.5) / 20)}"/>')
    for v in (0, 0.5, 1):
        parts.append(f'<text x="{kx + 20}" y="{ky + kh * (1 - v) + 4:.1f}" font-size="11">{v:g}</text>')
    caption = ("share of the", "reference", "class's pixels")
    if kh >= 240:  # along the key
        parts.append(f'<text transform="translate({kx + 58},{ky + kh / 2:.0f}) rotate(90)" font-size="11" '
                     f'text-anchor="middle">{escape(" ".join(caption))}</text>')
    else:  # a short key: the caption beside it, in three lines
        parts.append(f'<text x="{kx + 44}" y="{ky + kh / 2 - 14:.0f}" font-size="11">' + "".join(
            f'<tspan x="{kx + 44}" dy="{0 if i == 0 else 14}">{escape(line)}</tspan>'
            for i, line in enumerate(caption)) + "</text>")
    parts.append(f'<text transform="translate(12,{top + kh / 2:.0f}) rotate(-90)" font-size="13" '
                 'text-anchor="middle">reference</text>')
    parts.append("</svg>")
    return "".join(parts)


def _count(v: float) -> str:
    v = int(v)
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if v >= div * 10:
            return f"{v / div:.0f}{unit} px"
    return f"{v:,} px"


def iou_bars_svg(names: list[str], ious: list[float | None], colours: list[str]) -> str:
    """One horizontal bar per class on a 0..1 axis, its IoU written beside it (n/a where undefined)."""
    k = len(names)
    bar, gap = 20, 8
    left = 20 + max((_text_width(n, 12) for n in names), default=0)
    plot = 480
    width, height = left + plot + 60, 20 + k * (bar + gap) + 40
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height}" '
             f'viewBox="0 0 {width:.0f} {height}" {FONT}>', f'<rect width="{width:.0f}" height="{height}" fill="white"/>']
    axis = 20 + k * (bar + gap)
    for t in (0, 0.2, 0.4, 0.6, 0.8, 1.0):
        x = left + plot * t
        parts.append(f'<line x1="{x:.1f}" y1="14" x2="{x:.1f}" y2="{axis}" stroke="#e4e4e4"/>'
                     f'<text x="{x:.1f}" y="{axis + 16}" font-size="11" text-anchor="middle">{t:.1f}</text>')
    for i, (n, v, c) in enumerate(zip(names, ious, colours)):
        y = 20 + i * (bar + gap)
        parts.append(f'<text x="{left - 6:.0f}" y="{y + bar / 2:.1f}" font-size="12" text-anchor="end" '
                     f'dominant-baseline="middle">{escape(n)}</text>')
        if v is None or v != v:
            parts.append(f'<text x="{left + 4:.0f}" y="{y + bar / 2:.1f}" font-size="11" '
                         'dominant-baseline="middle" fill="#666">n/a</text>')
            continue
        parts.append(f'<rect x="{left:.0f}" y="{y}" width="{plot * v:.1f}" height="{bar}" fill="{escape(c)}" '
                     f'stroke="black" stroke-width="0.8"/><text x="{left + plot * v + 4:.1f}" y="{y + bar / 2:.1f}" '
                     f'font-size="11" dominant-baseline="middle">{v:.3f}</text>')
    parts.append(f'<line x1="{left:.0f}" y1="{axis}" x2="{left + plot:.0f}" y2="{axis}" stroke="black"/>'
                 f'<text x="{left + plot / 2:.0f}" y="{height - 4}" font-size="12" text-anchor="middle">IoU</text>'
                 "</svg>")
    return "".join(parts)
