"""``audit.gpkg``: true positive, false positive and false negative polygons per class, and an IoU grid."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import shapely

from geoseg.classes import ClassList, SegClass
from geoseg.io.styles import fill_qml, write_layer_styles

KIND_COLORS = {"tp": "#1a9641", "fp": "#d7191c", "fn": "#2c7bb6"}
GRID_ALPHA = 128  # of 255: the IoU grid's fill lets the imagery show through


def write_audit(path: Path, audits: list, classes: ClassList, options) -> None:
    """Vectorize each scene's TP/FP/FN rasters into one layer per class and kind, plus the grid."""
    import pyogrio

    from geoseg.vector.vectorize import VectorizeOptions, vectorize

    styles: dict[str, str] = {}
    wanted = [c for c in classes if c.vectorize]
    written: set[str] = set()
    for res, codes in audits:
        for kind, raster in zip(("tp", "fp", "fn"), codes):
            tmp = raster.with_suffix(".gpkg")
            vectorize(raster, tmp, VectorizeOptions(
                classes=None, progress=False, overwrite=True, chunk_size=options.chunk_size,
                scheduler=options.scheduler, workers=options.workers, source=res.name), classes=classes)
            for c in wanted:
                layer = f"{c.slug}_{kind}"
                gdf = pyogrio.read_dataframe(tmp, layer=c.slug)
                gdf["kind"] = kind.upper()
                pyogrio.write_dataframe(gdf, path, layer=layer, append=layer in written, promote_to_multi=True,
                                        geometry_type="MultiPolygon",
                                        dataset_options=None if path.exists() else {"VERSION": "1.2"})
                written.add(layer)
                styles[layer] = fill_qml(SegClass(c.id, f"{c.name} {kind.upper()}", KIND_COLORS[kind]), alpha=180)
            tmp.unlink(missing_ok=True)
            os.unlink(raster)
        grid = _grid_frame(res, classes)
        pyogrio.write_dataframe(grid, path, layer="iou_grid", append="iou_grid" in written,
                                geometry_type="Polygon")
        written.add("iou_grid")
    styles["iou_grid"] = grid_qml()
    write_layer_styles(path, styles)


def _grid_frame(res, classes: ClassList):
    import geopandas as gpd
    import pandas as pd

    g = res.grid
    recs = {"scene": [], "cell_row": [], "cell_col": [], "valid_px": [], "mean_iou": []}
    per_class = {c.slug: [] for c in classes if c.vectorize}
    geoms = []
    cs = res.cell_size
    t = g.transform
    for (ci, cj), counts in sorted(res.cells.items()):
        x0, y0 = cj * cs, ci * cs
        x1, y1 = min(x0 + cs, g.width), min(y0 + cs, g.height)
        corners = [t * (x0, y0), t * (x1, y0), t * (x1, y1), t * (x0, y1)]
        geoms.append(shapely.Polygon(corners))
        ious = []
        for c in classes:
            if not c.vectorize:
                continue
            tp, fp, fn = counts[c.id]
            iou = tp / (tp + fp + fn) if tp + fp + fn else math.nan
            per_class[c.slug].append(iou)
            if not math.isnan(iou):
                ious.append(iou)
        recs["scene"].append(res.name)
        recs["cell_row"].append(ci)
        recs["cell_col"].append(cj)
        recs["valid_px"].append(int(counts[:, 0].sum() + counts[:, 2].sum()))
        recs["mean_iou"].append(float(np.mean(ious)) if ious else math.nan)
    data = {**recs, **{f"iou_{k}": v for k, v in per_class.items()}}
    df = pd.DataFrame(data)
    for col in df.columns:
        if col.startswith(("iou_", "mean_iou")):
            df[col] = pd.array(df[col].to_numpy(dtype="float64"), dtype="Float64")
    return gpd.GeoDataFrame(df, geometry=geoms, crs=g.crs)


def grid_qml() -> str:
    """A red-to-green style on ``mean_iou``, half transparent, so weak cells stand out over the imagery.

    Rule-based rather than graduated: QGIS reads a NULL ``mean_iou`` (a cell
    with nothing to score) as 0 in a graduated renderer and paints it as a
    failure; these rules skip NULL, so such cells carry no fill at all.
    """
    ranges = [(0.0, 0.25, "215,25,28"), (0.25, 0.5, "253,174,97"), (0.5, 0.75, "166,217,106"),
              (0.75, 1.0001, "26,150,65")]
    q = "&quot;mean_iou&quot;"
    rules = "".join(
        f'<rule key="r{i}" symbol="{i}" label="IoU {lo:.2f} – {min(hi, 1):.2f}" '
        f'filter="{q} IS NOT NULL AND {q} &gt;= {lo} AND {q} &lt; {hi}"/>'
        for i, (lo, hi, _) in enumerate(ranges))
    syms = "".join(
        f'<symbol type="fill" name="{i}" alpha="1" clip_to_extent="1" force_rhr="0">'
        f'<layer class="SimpleFill" pass="0" locked="0" enabled="1"><Option type="Map">'
        f'<Option name="color" type="QString" value="{c},{GRID_ALPHA}"/>'
        f'<Option name="style" type="QString" value="solid"/>'
        f'<Option name="outline_color" type="QString" value="60,60,60,255"/>'
        f'<Option name="outline_width" type="QString" value="0.1"/></Option>'
        f'<prop k="color" v="{c},{GRID_ALPHA}"/><prop k="style" v="solid"/>'
        f'<prop k="outline_color" v="60,60,60,255"/>'
        f'<prop k="outline_width" v="0.1"/></layer></symbol>'
        for i, (_, _, c) in enumerate(ranges))
    return ("<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
            '<qgis version="3.22.0" styleCategories="Symbology">'
            '<renderer-v2 type="RuleRenderer" symbollevels="0" enableorderby="0" forceraster="0">'
            f'<rules key="root">{rules}</rules><symbols>{syms}</symbols></renderer-v2>'
            "<layerGeometryType>2</layerGeometryType></qgis>\n")
