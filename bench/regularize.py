"""What ``vectorize --regularize`` costs: plain vectorize against --regularize, side by side, interleaved.

    python bench/regularize.py [--repeats 3] [--classes NAME.classes.tif]

Default input: the demo's class raster (``buildings-rgb`` on ``geoseg/data/rio/rio_heldout.tif``,
predicted once into bench/out/regularize/). Each run is a ``geoseg vectorize`` subprocess (imports
included on both sides) timed by its wall clock, with its peak RSS; medians are quoted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out" / "regularize"


def run(args: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one ``geoseg`` subprocess."""
    t = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-m", "geoseg", *args], stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(p.pid, 0)
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"geoseg {' '.join(args)} failed")
    return time.perf_counter() - t, usage.ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--classes", default=None)
    a = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    classes = a.classes
    if classes is None:
        classes = str(OUT / "rio_heldout.classes.tif")
        if not Path(classes).exists():
            run(["predict", "buildings-rgb", str(ROOT / "geoseg/data/rio/rio_heldout.tif"), "-o", str(OUT),
                 "--no-progress"])
    common = ["vectorize", classes, "--min-area", "4", "--connectivity", "8", "--no-progress", "--overwrite"]
    times: dict[str, list] = {"plain": [], "regularize": []}
    rss: dict[str, list] = {"plain": [], "regularize": []}
    for _ in range(a.repeats):
        for name, extra in (("plain", []), ("regularize", ["--regularize"])):
            s, m = run(common + ["-o", str(OUT / f"{name}.gpkg"), *extra])
            times[name].append(s)
            rss[name].append(m)
    print(f"cpu: {cpu_model()}")
    for name in times:
        print(f"{name:10s} median {statistics.median(times[name]):6.2f} s  runs "
              + ", ".join(f"{v:.2f}" for v in times[name]) + f"  peak RSS median {statistics.median(rss[name]):.0f} MB")
    print(f"ratio regularize / plain: {statistics.median(times['regularize']) / statistics.median(times['plain']):.2f}x")


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    except OSError:
        return "?"
    model = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), "?")
    flags = next((ln.split(":", 1)[1].split() for ln in out.splitlines() if ln.startswith("Flags")), [])
    return f"{model}; " + " ".join(f for f in flags if f.startswith(("avx512", "amx")) or f == "avx2")


if __name__ == "__main__":
    main()
