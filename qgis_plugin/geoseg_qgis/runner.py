"""Running the geoseg command line from QGIS: an argument list (never a shell string), progress read from its
JSON lines, cancel by SIGTERM (geoseg unwinds: nothing half-written is left), errors as geoseg's one line.

Nothing here imports QGIS or geoseg: QGIS's Python never loads torch, rasterio or geoseg's dependencies.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time

ENV_EXECUTABLE = "GEOSEG_EXECUTABLE"


class GeosegFailed(Exception):
    """geoseg exited non-zero; the message is its own one line."""


class GeosegNotFound(Exception):
    pass


def find_executable(setting: str | None = None) -> str:
    """The geoseg executable: the plugin setting, else ``$GEOSEG_EXECUTABLE``, else ``geoseg`` on PATH."""
    for candidate in (setting, os.environ.get(ENV_EXECUTABLE)):
        if candidate:
            if os.path.isdir(candidate):  # a virtual environment
                for sub in ("bin/geoseg", "Scripts/geoseg.exe"):
                    if os.path.isfile(os.path.join(candidate, sub)):
                        return os.path.join(candidate, sub)
            if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
                return candidate
            raise GeosegNotFound(f"the geoseg executable {candidate!r} does not exist or cannot be run; set it in "
                                 "Settings > Options > Processing > Providers > geoseg")
    found = shutil.which("geoseg")
    if not found:
        raise GeosegNotFound("geoseg is not on PATH: install it (pip install geoseg) and set its executable in "
                             "Settings > Options > Processing > Providers > geoseg")
    return found


def clean_env() -> dict:
    """QGIS's environment without its Python settings, which would point geoseg's interpreter at QGIS's
    site-packages."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env["GEOSEG_PROGRESS"] = "json"
    return env


def run(executable: str, args: list[str], on_progress=None, on_info=None, is_canceled=None,
        poll: float = 0.1) -> list[str]:
    """Run ``executable --progress-json ARGS``; returns its stdout lines (the files it wrote).

    ``on_progress(percent, task)`` per progress line, ``on_info(line)`` per other stderr line,
    ``is_canceled()`` polled: when true the process gets SIGTERM and :class:`InterruptedError` is raised
    once it has exited. A non-zero exit raises :class:`GeosegFailed` with geoseg's error line.
    """
    import queue

    args = [str(a) for a in args]
    proc = subprocess.Popen([executable, "--progress-json", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True, env=clean_env(), bufsize=1)
    out_lines: list[str] = []
    err_lines: list[str] = []
    events: queue.Queue = queue.Queue()  # the callbacks run on the calling thread (QGIS's feedback is not shared)

    def read_out() -> None:
        for line in proc.stdout:
            out_lines.append(line.rstrip("\n"))

    def read_err() -> None:
        for line in proc.stderr:
            line = line.rstrip("\n")
            if line.startswith('{"progress"'):
                try:
                    p = json.loads(line)["progress"]
                    events.put(("progress", 100.0 * int(p.get("done") or 0) / max(int(p.get("total") or 0), 1),
                                str(p.get("task", ""))))
                except (ValueError, KeyError, TypeError):
                    pass
                continue
            err_lines.append(line)
            if line.strip():
                events.put(("info", line, None))

    def drain() -> None:
        while True:
            try:
                kind, a, b = events.get_nowait()
            except queue.Empty:
                return
            if kind == "progress" and on_progress is not None:
                on_progress(a, b)
            elif kind == "info" and on_info is not None:
                on_info(a)

    readers = [threading.Thread(target=read_out, daemon=True), threading.Thread(target=read_err, daemon=True)]
    for t in readers:
        t.start()
    canceled = False
    while proc.poll() is None:
        drain()
        if not canceled and is_canceled is not None and is_canceled():
            canceled = True
            proc.terminate()  # SIGTERM: geoseg discards its temporaries and exits 143
        time.sleep(poll)
    for t in readers:
        t.join(timeout=10)
    drain()
    if canceled:
        raise InterruptedError("canceled: geoseg stopped and removed its partial outputs")
    if proc.returncode != 0:
        errors = [ln for ln in err_lines if ln.startswith("geoseg: error:")]
        raise GeosegFailed(errors[-1] if errors else (err_lines[-1] if err_lines else
                                                       f"geoseg exited with status {proc.returncode}"))
    return out_lines
