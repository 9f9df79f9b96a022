"""The package's shape, read from its imports: no cycles, no private names across packages, stages in order.

Every ``import`` and ``from ... import`` of every module counts, function-level (lazy) imports and
``TYPE_CHECKING`` blocks included: a lazy import still ties two modules together. The checker is
tested on small trees with the problems the regroup removed (a function-level cycle between
prediction and instances, a private helper imported across packages), so that it cannot pass by
seeing nothing.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# The flow, lowest first (docs/architecture.md): a module may import its own stage and the stages below it.
STAGES = [
    ("base", ["geoseg.errors", "geoseg.version", "geoseg.classes", "geoseg.options", "geoseg.data"]),
    ("io", ["geoseg.io"]),
    ("models", ["geoseg.models"]),
    ("engines", ["geoseg.engines"]),
    ("refine", ["geoseg.refine"]),
    ("inference", ["geoseg.inference"]),
    ("vector", ["geoseg.vector"]),
    ("clustering", ["geoseg.clustering"]),
    ("instances", ["geoseg.instances"]),
    ("prediction", ["geoseg.prediction"]),
    ("evaluation", ["geoseg.evaluation"]),
    ("benchmarks", ["geoseg.benchmarks"]),
    ("training", ["geoseg.training"]),
    ("workflows", ["geoseg.workflows"]),
    ("cli", ["geoseg.cli", "geoseg.__main__"]),
    ("api", ["geoseg"]),
]


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the geoseg module imported (or whose name is imported)
    name: str | None  # the name taken from it, for ``from target import name``
    line: int


def modules(root: Path, package: str = "geoseg") -> dict[str, Path]:
    """Dotted name -> file of every Python module and compiled kernel source under ``root/package``."""
    out = {}
    for path in sorted((root / package).rglob("*")):
        if path.suffix not in (".py", ".pyx") or "__pycache__" in path.parts:
            continue
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def imports(root: Path, package: str = "geoseg") -> list[Import]:
    """Every import of a ``package`` module by a ``package`` module, at any depth of the code."""
    mods = modules(root, package)

    def owner(name: str) -> str | None:  # the longest module prefix of a dotted name
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    found = []
    for mod, path in mods.items():
        if path.suffix != ".py":
            continue
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    target = owner(alias.name)
                    if target and alias.name.startswith(package):
                        found.append(Import(mod, target, None, node.lineno))
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    base = base[: len(base) - node.level + 1]
                    src = ".".join(base + ([node.module] if node.module else []))
                else:
                    src = node.module or ""
                if not src.startswith(package):
                    continue
                for alias in node.names:
                    sub = f"{src}.{alias.name}"
                    if sub in mods:  # ``from geoseg.vector import tracing``: the module itself
                        found.append(Import(mod, sub, None, node.lineno))
                    elif owner(src):
                        found.append(Import(mod, owner(src), alias.name, node.lineno))
    return [i for i in found if i.target != i.source]


def cycles(found: list[Import]) -> list[list[str]]:
    """The import cycles: strongly connected groups of more than one module (Tarjan)."""
    graph: dict[str, set[str]] = {}
    for i in found:
        graph.setdefault(i.source, set()).add(i.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def package_of(module: str, mods: dict[str, Path]) -> str:
    """The package a module belongs to: itself for a package's ``__init__``, else its parent."""
    return module if mods[module].name == "__init__.py" else module.rpartition(".")[0]


def private_imports(found: list[Import], mods: dict[str, Path]) -> list[Import]:
    """Imports of another package's private names, or of its private modules (``_trace_ext``)."""
    bad = []
    for i in found:
        private_name = i.name is not None and i.name.startswith("_") and not i.name.startswith("__")
        private_module = i.name is None and i.target.rpartition(".")[2].startswith("_") \
            and not i.target.endswith("__main__")
        if (private_name or private_module) and package_of(i.source, mods) != package_of(i.target, mods):
            bad.append(i)
    return bad


def stage_of(module: str) -> int:
    best, rank = -1, None
    for n, (_, prefixes) in enumerate(STAGES):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best:
                best, rank = len(p), n
    assert rank is not None, f"{module} belongs to no stage of STAGES: add it there and to docs/architecture.md"
    return rank


def upward_imports(found: list[Import]) -> list[Import]:
    return [i for i in found if stage_of(i.target) > stage_of(i.source)]


def _describe(found: list[Import]) -> str:
    return "\n".join(f"{i.source}:{i.line} imports {i.target}{'.' + i.name if i.name else ''}" for i in found)


@pytest.fixture(scope="module")
def tree():
    mods = modules(ROOT)
    return mods, imports(ROOT)


def test_no_import_cycles(tree):
    _, found = tree
    assert cycles(found) == []


def test_no_private_names_across_packages(tree):
    mods, found = tree
    bad = private_imports(found, mods)
    assert not bad, _describe(bad)


def test_lower_stages_never_import_higher_ones(tree):
    mods, found = tree
    for m in mods:
        stage_of(m)  # every module has a stage
    bad = upward_imports(found)
    assert not bad, _describe(bad)


def test_compiled_kernels_sit_beside_their_callers(tree):
    mods, found = tree
    kernels = {m for m, p in mods.items() if p.suffix == ".pyx"}
    assert len(kernels) == 4
    callers = {k: {i.source for i in found if i.target == k} for k in kernels}
    for k, users in callers.items():
        assert users, f"{k} is compiled but nothing imports it"
        assert {package_of(u, mods) for u in users} == {k.rpartition(".")[0]}, (k, users)


def test_no_grab_bag_modules(tree):
    mods, _ = tree
    assert not [m for m in mods if m.rpartition(".")[2] in ("utils", "util", "helpers", "misc", "common")]


def test_api_names_are_not_shadowed_by_modules(tree):
    """``geoseg.predict`` & co. are plain functions: no module or package of the same name exists."""
    import geoseg

    mods, _ = tree
    for name in geoseg.__all__:
        if name not in ("benchmarks", "workflows"):
            assert f"geoseg.{name}" not in mods, name


# The checker itself, on small trees with the problems of the tree before the regroup.


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


def test_checker_finds_a_cycle_through_a_function_level_import(tmp_path):
    root = _write(tmp_path, {
        "geoseg/__init__.py": "",
        "geoseg/predict.py": "def predict():\n    from geoseg.instances.predict import scene\n",
        "geoseg/instances/__init__.py": "",
        "geoseg/instances/predict.py": "from geoseg.predict import predict\n\ndef scene():\n    pass\n",
        "geoseg/classes.py": "import geoseg.errors\n",
        "geoseg/errors.py": "",
    })
    assert cycles(imports(root)) == [["geoseg.instances.predict", "geoseg.predict"]]


def test_checker_finds_relative_and_package_level_cycles(tmp_path):
    root = _write(tmp_path, {
        "geoseg/__init__.py": "",
        "geoseg/cli/__init__.py": "",
        "geoseg/cli/main.py": "def register():\n    from . import predict\n",
        "geoseg/cli/predict.py": "from .main import debug_option\n",
    })
    assert cycles(imports(root)) == [["geoseg.cli.main", "geoseg.cli.predict"]]


def test_checker_finds_private_names_across_packages(tmp_path):
    root = _write(tmp_path, {
        "geoseg/__init__.py": "",
        "geoseg/train/__init__.py": "",
        "geoseg/train/loop.py": "def _save_checkpoint():\n    pass\n",
        "geoseg/train/other.py": "from geoseg.train.loop import _save_checkpoint\n",  # same package: allowed
        "geoseg/instances/__init__.py": "",
        "geoseg/instances/train.py": "def f():\n    from geoseg.train.loop import _save_checkpoint, validate\n",
        "geoseg/metrics.py": "from geoseg import _labels_ext\n",
        "geoseg/_labels_ext.pyx": "",
    })
    found = imports(root)
    bad = {(i.source, i.target, i.name) for i in private_imports(found, modules(root))}
    assert bad == {("geoseg.instances.train", "geoseg.train.loop", "_save_checkpoint")}
    # a kernel imported from its own package is fine; from another package it is private
    root2 = _write(tmp_path / "b", {
        "geoseg/__init__.py": "", "geoseg/_k.pyx": "", "geoseg/a/__init__.py": "",
        "geoseg/a/m.py": "import geoseg._k\n",
    })
    bad2 = private_imports(imports(root2), modules(root2))
    assert [(i.source, i.target) for i in bad2] == [("geoseg.a.m", "geoseg._k")]


def test_checker_finds_an_upward_import(tmp_path):
    root = _write(tmp_path, {
        "geoseg/__init__.py": "",
        "geoseg/io/__init__.py": "",
        "geoseg/io/raster.py": "def f():\n    from geoseg.evaluation.metrics import confusion\n",
        "geoseg/evaluation/__init__.py": "",
        "geoseg/evaluation/metrics.py": "from geoseg.io.raster import f\n",
    })
    bad = upward_imports(imports(root))
    assert [(i.source, i.target, i.name) for i in bad] == [("geoseg.io.raster", "geoseg.evaluation.metrics",
                                                            "confusion")]
