"""Open a geoseg GeoPackage in real QGIS (PyQGIS) and check every layer, then render them.

Run by tests/test_qgis.py with Debian's /usr/bin/python3 and QT_QPA_PLATFORM=offscreen:

    python3 qgis_check.py OUT.gpkg EPSG:32616 layer=#rrggbb [layer=#rrggbb ...] --png out.png

Prints one JSON line per layer and exits non-zero on the first failed check.
"""

import json
import os
import sys

from qgis.core import (
    QgsApplication,
    QgsMapRendererParallelJob,
    QgsMapSettings,
    QgsRectangle,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QSize
from qgis.PyQt.QtGui import QColor


def render(layers, extent, png, size=400):
    """Render ``layers`` over ``extent`` on white into ``png``; returns the image and the map settings."""
    settings = QgsMapSettings()
    settings.setLayers(layers)
    settings.setDestinationCrs(layers[0].crs())
    settings.setExtent(extent)
    settings.setOutputSize(QSize(size, size))
    settings.setBackgroundColor(QColor(255, 255, 255))
    job = QgsMapRendererParallelJob(settings)
    job.start()
    job.waitForFinished()
    image = job.renderedImage()
    image.save(png, "PNG")
    return image, settings


def main(argv):
    gpkg, authid = argv[0], argv[1]
    png = argv[argv.index("--png") + 1]
    expected = dict(a.split("=", 1) for a in argv[2:argv.index("--png")])
    app = QgsApplication([], False)
    app.initQgis()
    layers = []
    extent = QgsRectangle()
    for name, color in expected.items():
        layer = QgsVectorLayer(f"{gpkg}|layername={name}", name, "ogr")
        assert layer.isValid(), f"{name}: layer is not valid"
        msg, ok = layer.loadDefaultStyle()
        assert ok, f"{name}: loadDefaultStyle failed: {msg}"
        renderer = layer.renderer()
        kind = renderer.type()
        assert kind in ("singleSymbol", "categorizedSymbol"), f"{name}: renderer {kind}"
        symbol = renderer.symbol() if kind == "singleSymbol" else renderer.categories()[0].symbol()
        got = symbol.color().name()
        assert QColor(got) == QColor(color), f"{name}: colour {got}, expected {color}"
        assert layer.crs().authid() == authid, f"{name}: CRS {layer.crs().authid()}"
        print(json.dumps({"layer": name, "valid": True, "renderer": kind, "color": got,
                          "crs": layer.crs().authid(), "features": layer.featureCount()}), flush=True)
        layers.append(layer)
        if layer.featureCount():
            extent.combineExtentWith(layer.extent())
    image, _ = render(layers, extent, png)
    colors = {image.pixelColor(x, y).name() for x in range(0, 400, 4) for y in range(0, 400, 4)}
    print(json.dumps({"png": png, "distinct_colors": len(colors)}), flush=True)
    assert len(colors) > 2, "the rendered map is blank"


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except AssertionError as exc:
        print(f"FAILED: {exc}", flush=True)
        os._exit(1)
    # Leave without Qt's teardown: headless PyQGIS 3.22 can crash there after a successful run.
    os._exit(0)
