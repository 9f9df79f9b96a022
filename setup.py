"""Build the compiled kernels, each beside the module that calls it; everything else is in pyproject.toml.

- ``geoseg/inference/_blend_ext.pyx``: the per-tile work around the model (normalising, votes, argmax)
- ``geoseg/vector/_trace_ext.pyx``: connected components and boundary rings for vectorizing
- ``geoseg/evaluation/_counts_ext.pyx``: one-pass confusion and instance counters over label images
- ``geoseg/benchmarks/_png_ext.pyx``: PNG row reconstruction for benchmark label images
"""

from Cython.Build import cythonize
from setuptools import Extension, setup

KERNELS = ("inference._blend_ext", "vector._trace_ext", "evaluation._counts_ext", "benchmarks._png_ext")

setup(ext_modules=cythonize(
    [Extension(f"geoseg.{name}", [f"geoseg/{name.replace('.', '/')}.pyx"],
               extra_compile_args=["-O3", "-fno-math-errno", "-fno-trapping-math"])
     for name in KERNELS],
    compiler_directives={"language_level": "3"},
))
