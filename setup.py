"""Build the compiled vectorizing kernels; everything else is in pyproject.toml."""

from Cython.Build import cythonize
from setuptools import Extension, setup

setup(ext_modules=cythonize(
    [Extension("geoseg._trace_ext", ["geoseg/_trace_ext.pyx"], extra_compile_args=["-O3"])],
    compiler_directives={"language_level": "3"},
))
