"""Every module geoseg imports at run time is a declared runtime dependency (not only a test extra)."""

from __future__ import annotations

import ast
import sys
from importlib.metadata import packages_distributions, requires
from pathlib import Path

import geoseg

PACKAGE = Path(geoseg.__file__).parent


def _optional_nodes(tree: ast.AST) -> set[int]:
    """Import nodes inside ``try: ... except ImportError:`` (an optional dependency with a fallback)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
                isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError")
                for h in node.handlers):
            out |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return out


def imported_top_modules(optional: bool = False) -> dict[str, list[str]]:
    """Top-level module name -> the geoseg files that import it (anywhere in the file).

    ``optional``: only the imports guarded by ``except ImportError``; else only the others.
    """
    found: dict[str, list[str]] = {}
    for py in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(py.read_text())
        guarded = _optional_nodes(tree)
        for node in ast.walk(tree):
            if (id(node) in guarded) != optional:
                continue
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for n in names:
                found.setdefault(n.split(".")[0], []).append(str(py.relative_to(PACKAGE.parent)))
    return found


def runtime_requirements(extras: bool = False) -> set[str]:
    out = set()
    for req in requires("geoseg") or []:
        if ("extra ==" in req) != extras:
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



def test_optional_imports_are_declared_extras():
    """An import with an ImportError fallback (faster-coco-eval) is still declared, as an install extra."""
    dists = packages_distributions()
    declared = runtime_requirements(extras=True)
    optional = imported_top_modules(optional=True)
    assert "faster_coco_eval" in optional
    missing = {mod: files for mod, files in optional.items()
               if not {d.lower().replace("_", "-") for d in dists.get(mod, [mod])} & declared}
    assert not missing, f"optional imports not declared as an extra: {missing}"
