"""Open a class raster and an audit grid in real QGIS (PyQGIS) and report what a user sees.

Run by tests/test_qgis.py with Debian's /usr/bin/python3 and QT_QPA_PLATFORM=offscreen:

    python3 qgis_layers_check.py --raster NAME.classes.tif [--grid audit.gpkg --png grid.png]
    python3 qgis_layers_check.py --instances NAME.instances.gpkg --png map.png

Prints one JSON line per layer: the raster's renderer, its legend entries (label, colour,
alpha); the grid's renderer and the colour rendered at the centre of each cell.
"""

import json
import os
import sys

from qgis.core import QgsApplication, QgsRasterLayer, QgsVectorLayer
from qgis_check import render  # this script's folder is on sys.path when it runs


def raster(path):
    layer = QgsRasterLayer(path, "classes")  # loads NAME.qml beside NAME.tif as its default style
    assert layer.isValid(), "raster layer is not valid"
    r = layer.renderer()
    entries = [{"value": c.value, "label": c.label, "color": c.color.name(), "alpha": c.color.alpha()}
               for c in r.classes()] if r.type() == "paletted" else []
    legend = [label for label, _ in r.legendSymbologyItems()]
    print(json.dumps({"layer": "raster", "renderer": r.type(), "classes": entries, "legend": legend}), flush=True)


def grid(gpkg, png):
    layer = QgsVectorLayer(f"{gpkg}|layername=iou_grid", "iou_grid", "ogr")
    assert layer.isValid(), "grid layer is not valid"
    image, settings = render([layer], layer.extent(), png)
    cells = []
    for f in layer.getFeatures():
        c = f.geometry().centroid().asPoint()
        px = settings.mapToPixel().transform(c)
        colour = image.pixelColor(int(px.x()), int(px.y()))
        iou = f["mean_iou"]
        cells.append({"mean_iou": None if iou is None or str(iou) == "NULL" else float(iou),
                      "rgb": [colour.red(), colour.green(), colour.blue()]})
    print(json.dumps({"layer": "iou_grid", "renderer": layer.renderer().type(), "cells": cells}), flush=True)


def instances(gpkg, png):
    layer = QgsVectorLayer(f"{gpkg}|layername=instances", "instances", "ogr")
    assert layer.isValid(), "instances layer is not valid"
    r = layer.renderer()
    cats = [{"value": c.value(), "label": c.label(), "color": c.symbol().color().name()} for c in r.categories()] \
        if r.type() == "categorizedSymbol" else []
    image, settings = render([layer], layer.extent(), png)
    seen = []
    for f in layer.getFeatures():
        c = f.geometry().pointOnSurface().asPoint()
        px = settings.mapToPixel().transform(c)
        colour = image.pixelColor(int(px.x()), int(px.y()))
        seen.append({"class_name": f["class_name"], "rgb": [colour.red(), colour.green(), colour.blue()]})
    print(json.dumps({"layer": "instances", "renderer": r.type(), "field": getattr(r, "classAttribute", lambda: "")(),
                      "categories": cats, "features": seen}), flush=True)


def main(argv):
    app = QgsApplication([], False)
    app.initQgis()
    if "--raster" in argv:
        raster(argv[argv.index("--raster") + 1])
    if "--grid" in argv:
        grid(argv[argv.index("--grid") + 1], argv[argv.index("--png") + 1])
    if "--instances" in argv:
        instances(argv[argv.index("--instances") + 1], argv[argv.index("--png") + 1])


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except AssertionError as exc:
        print(f"FAILED: {exc}", flush=True)
        os._exit(1)
    os._exit(0)  # headless PyQGIS 3.22 can crash in Qt's teardown after a successful run
