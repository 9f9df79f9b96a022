"""geoseg for QGIS: a Processing provider that runs the geoseg command line (predict, vectorize, evaluate, run).

QGIS's Python never imports torch or geoseg: each algorithm runs the ``geoseg`` executable in a subprocess.
``classFactory`` copes with no interface (``qgis_process`` and headless scripts), and ``initProcessing``
adds the provider, as ``qgis_process`` loads plugins with ``hasProcessingProvider=yes``.
"""


def classFactory(iface):  # noqa: N802 - the name QGIS calls
    from .plugin import GeosegPlugin

    return GeosegPlugin(iface)
