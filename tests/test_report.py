"""report.html in a real headless browser (Debian's Chromium): it loads, shows the object scores, its images decode."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import numpy as np
import pytest

from geoseg.evaluation.evaluate import EvaluateOptions, evaluate
from tests.test_vectorize import write_classes

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(not CHROMIUM and not os.environ.get("CI"),
                                    reason="Chromium not installed (bash .ci/system-deps.sh installs it; CI always runs this)")


def dump_dom(html_path, tmp_path) -> str:
    """The DOM after load, with each image's decoded size recorded by a probe script added to a copy."""
    probe = tmp_path / "probe.html"
    text = html_path.read_text()
    script = ("<script>window.addEventListener('load',()=>{for(const i of document.images)"
              "{i.setAttribute('data-decoded',i.complete&&i.naturalWidth>0?i.naturalWidth+'x'+i.naturalHeight:'no')}"
              "document.body.setAttribute('data-loaded','yes')})</script>")
    probe.write_text(text.replace("</body>", script + "</body>"))
    r = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom",
                        probe.as_uri()], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


def scored(tmp_path, classes=None):
    rng = np.random.default_rng(3)
    ref = np.zeros((600, 500), np.uint8)
    for _ in range(25):
        y, x = rng.integers(0, 560, 2)
        ref[y:y + 30, x % 470:x % 470 + 25] = 1
    ref[400:, :100] = 2
    pred = ref.copy()
    pred[:, 250:] = np.roll(ref[:, 250:], 6, axis=0)  # errors on the right half only
    write_classes(tmp_path / "p.tif", pred)
    write_classes(tmp_path / "r.tif", ref)
    return evaluate(tmp_path / "p.tif", tmp_path / "r.tif", tmp_path / "rep",
                    EvaluateOptions(progress=False, audit=False)), pred, ref


def test_html_holds_objects_scene_count_crs_and_notes(tmp_path):
    rep, _, _ = scored(tmp_path)
    text = (tmp_path / "rep" / "report.html").read_text()
    assert 'id=objects' in text and f"<td>{rep['objects']['building']['tp']}</td>" in text
    assert "1 scene · CRS EPSG:32616" in text
    assert "Foreground mean IoU" in text and text.index("Foreground mean IoU") < text.index("All classes:")
    assert text.count("<li><b>") >= 8  # one line per metric saying what it means
    assert 'alt="error map of p"' in text


@needs_chromium
def test_report_loads_in_a_real_browser_with_decoded_images(tmp_path):
    scored(tmp_path)
    dom = dump_dom(tmp_path / "rep" / "report.html", tmp_path)
    assert 'data-loaded="yes"' in dom
    assert re.search(r"<table id=\"?objects\"?>", dom) and "building (IoU ≥ 0.5)" in dom
    sizes = re.findall(r'alt="([^"]+)"[^>]*data-decoded="(\d+)x(\d+)"', dom) + \
        [(a, w, h) for w, h, a in re.findall(r'data-decoded="(\d+)x(\d+)"[^>]*alt="([^"]+)"', dom)]
    found = {alt: (int(w), int(h)) for alt, w, h in sizes}
    assert set(found) == {"confusion matrix", "IoU per class", "error map of p"}, dom.count("data-decoded")
    assert "no" not in re.findall(r'data-decoded="([^"]+)"', dom)
    assert found["confusion matrix"][0] >= 400  # legible: grows with the class count, never a thumbnail


def test_error_map_shows_where_the_errors_are(tmp_path):
    """The map's cells on the left (no errors) are TP-only; FP and FN appear only on the right."""
    from geoseg.evaluation.evaluate import evaluate_scene
    from geoseg.inference.scheduler import open_runner

    _, pred, ref = scored(tmp_path)
    with open_runner("sync") as runner:
        res, _, _ = evaluate_scene(str(tmp_path / "p.tif"), str(tmp_path / "r.tif"),
                                   EvaluateOptions(progress=False, audit=False), runner, None)
    f = res.map_cell
    assert f == 2  # 600 px on the longer side: 2 px per cell keeps the map within 400 cells
    fg = (1, 2)
    for (r, c), (tp, fp, fn) in res.errors.items():
        win = (slice(r * f, r * f + f), slice(c * f, c * f + f))
        p, t = pred[win], ref[win]
        assert tp == np.sum(np.isin(p, fg) & (p == t))
        assert fp == np.sum(np.isin(p, fg) & (p != t)) and fn == np.sum(np.isin(t, fg) & (p != t))
        if c * f + f <= 250:
            assert fp == fn == 0
