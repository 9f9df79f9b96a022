"""Build the compiled kernels (vectorizing, per-tile prediction work, scoring label images); everything else is in
pyproject.toml."""

from Cython.Build import cythonize
from setuptools import Extension, setup

setup(ext_modules=cythonize(
    [Extension(f"geoseg.{name}", [f"geoseg/{name}.pyx"], extra_compile_args=["-O3", "-fno-math-errno", "-fno-trapping-math"])
     for name in ("_trace_ext", "_blend_ext", "_labels_ext")],
    compiler_directives={"language_level": "3"},
))
