"""The ``geoseg`` command line: one module per command, options shared in ``options``."""
