"""report.html's SVG figures: well-formed, and they show the numbers they are drawn from."""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from geoseg.evaluation.figures import confusion_svg, data_uri, iou_bars_svg, ramp

NS = "{http://www.w3.org/2000/svg}"


def texts(svg: str) -> list[str]:
    root = ET.fromstring(svg)
    return ["".join(t.itertext()) for t in root.iter(f"{NS}text")]


@pytest.mark.parametrize("k", [2, 5, 19])
def test_confusion_cells_hold_row_shares_and_counts(k):
    rng = np.random.default_rng(k)
    cm = rng.integers(0, 5000, (k, k))
    cm[0] = 0  # a class absent from the reference: its row shares are 0
    names = [f"class <{i}> & co" for i in range(k)]
    svg = confusion_svg(names, cm)
    root = ET.fromstring(svg)
    assert float(root.get("width")) >= 400
    words = texts(svg)
    assert words[:1] == [names[0]]  # names escaped, read back as written
    shares = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    cells = [w for w in words if w[:1].isdigit() and "px" not in w and len(w) == 4]
    assert cells == [f"{v:.2f}" for v in shares.ravel()]
    counts = [w for w in words if w.endswith(" px")]
    assert counts == [f"{v:,} px" for v in cm.ravel()]  # all under 10,000: written in full
    fills = [r.get("fill") for r in root.iter(f"{NS}rect") if r.get("width") == r.get("height") and
             r.get("stroke") == "#ddd"]
    assert fills == [ramp(v) for v in shares.ravel()]


def test_ramp_runs_light_to_dark():
    assert ramp(0) == "#f7fbff" and ramp(1) == "#08306b" and ramp(-1) == ramp(0) and ramp(2) == ramp(1)
    lightness = [sum(int(ramp(s)[i:i + 2], 16) for i in (1, 3, 5)) for s in np.linspace(0, 1, 21)]
    assert lightness == sorted(lightness, reverse=True)


def test_iou_bars_are_as_long_as_the_ious():
    svg = iou_bars_svg(["background", "building", "road"], [0.93, None, 0.25], ["#cccccc", "#e31a1c", "#ffff00"])
    root = ET.fromstring(svg)
    bars = [r for r in root.iter(f"{NS}rect") if r.get("stroke") == "black"]
    assert [float(b.get("width")) for b in bars] == [pytest.approx(480 * 0.93, abs=0.06),
                                                     pytest.approx(480 * 0.25, abs=0.06)]
    assert [b.get("fill") for b in bars] == ["#cccccc", "#ffff00"]
    words = texts(svg)
    assert "0.930" in words and "0.250" in words and "n/a" in words


def test_data_uri_round_trips():
    svg = confusion_svg(["a", "b"], [[1, 0], [0, 1]])
    uri = data_uri(svg)
    assert uri.startswith("data:image/svg+xml;base64,")
    assert base64.b64decode(uri.split(",", 1)[1]).decode() == svg
