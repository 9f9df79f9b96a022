"""geoseg's version, in one place (``geoseg.__version__``, ``geoseg --version``, bundles and reports)."""

__version__ = "0.1.0"
