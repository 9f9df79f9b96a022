"""Every module geoseg imports at run time is a declared runtime dependency (not only a test extra)."""

from __future__ import annotations

import ast
import sys
from importlib.metadata import packages_distributions, requires
from pathlib import Path

import geoseg

PACKAGE = Path(geoseg.__file__).parent


def imported_top_modules() -> dict[str, list[str]]:
    """Top-level module name -> the geoseg files that import it (anywhere in the file)."""
    found: dict[str, list[str]] = {}
    for py in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(py.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for n in names:
                found.setdefault(n.split(".")[0], []).append(str(py.relative_to(PACKAGE.parent)))
    return found


def runtime_requirements() -> set[str]:
    out = set()
    for req in requires("geoseg") or []:
        if "extra ==" in req:
            continue
        name = req.split(";")[0].strip()
        for sep in "<>=![ ":
            name = name.split(sep)[0]
        out.add(name.lower().replace("_", "-"))
    return out


def test_every_runtime_import_is_a_declared_dependency():
    dists = packages_distributions()
    declared = runtime_requirements()
    provided_by = {"PIL": "pillow", "yaml": "pyyaml", "distributed": "dask"}  # import name -> distribution
    missing = {}
    for mod, files in imported_top_modules().items():
        if mod in sys.stdlib_module_names or mod == "geoseg" or mod.startswith("_") or mod == "qgis":
            continue
        names = {d.lower().replace("_", "-") for d in dists.get(mod, [])} | {provided_by.get(mod, mod).lower()}
        if not names & declared:
            missing[mod] = files
    assert not missing, f"imported at run time but not in [project.dependencies]: {missing}"
    assert "matplotlib" in declared  # report.html's figures: a test extra once, and a crash for users

