"""QGIS styles stored in a GeoPackage's ``layer_styles`` table.

QGIS looks for this table when it opens a GeoPackage layer and applies the row
with ``useAsDefault`` set, so each class layer opens filled with its class colour.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from xml.sax.saxutils import quoteattr

from geoseg.classes import SegClass

_LAYER_STYLES_DDL = """
CREATE TABLE IF NOT EXISTS layer_styles (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    f_table_catalog TEXT(256), f_table_schema TEXT(256), f_table_name TEXT(256),
    f_geometry_column TEXT(256), styleName TEXT(30), styleQML TEXT, styleSLD TEXT,
    useAsDefault BOOLEAN, description TEXT, owner TEXT(30), ui TEXT(30),
    update_time DATETIME DEFAULT CURRENT_TIMESTAMP
)"""


def fill_qml(cls: SegClass, alpha: int = 255, outline: bool = True) -> str:
    """A single-symbol polygon style filled with the class colour."""
    r, g, b = cls.rgb
    fill = f"{r},{g},{b},{alpha}"
    line = f"{int(r * 0.6)},{int(g * 0.6)},{int(b * 0.6)},255"
    props = {
        "color": fill, "style": "solid", "outline_color": line,
        "outline_style": "solid" if outline else "no", "outline_width": "0.26", "outline_width_unit": "MM",
        "joinstyle": "bevel",
    }
    options = "".join(f'<Option name="{k}" type="QString" value="{v}"/>' for k, v in props.items())
    legacy = "".join(f'<prop k="{k}" v="{v}"/>' for k, v in props.items())
    return (
        "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
        '<qgis version="3.22.0" styleCategories="Symbology">\n'
        ' <renderer-v2 type="singleSymbol" symbollevels="0" enableorderby="0" forceraster="0">\n'
        "  <symbols>\n"
        f'   <symbol type="fill" name="0" alpha="1" clip_to_extent="1" force_rhr="0">\n'
        f'    <layer class="SimpleFill" pass="0" locked="0" enabled="1">'
        f'<Option type="Map">{options}</Option>{legacy}</layer>\n'
        "   </symbol>\n"
        "  </symbols>\n"
        "  <rotation/><sizescale/>\n"
        " </renderer-v2>\n"
        f" <layerGeometryType>2</layerGeometryType>\n"
        f" <!-- {quoteattr(cls.name)} -->\n"
        "</qgis>\n"
    )


def categorized_fill_qml(classes, field: str = "class_name", alpha: int = 160) -> str:
    """A polygon style with one category per class (by ``field``), each filled with the class colour."""
    cats, symbols = [], []
    for n, c in enumerate(classes):
        r, g, b = c.rgb
        props = {"color": f"{r},{g},{b},{alpha}", "style": "solid", "outline_style": "solid",
                 "outline_color": f"{int(r * 0.6)},{int(g * 0.6)},{int(b * 0.6)},255", "outline_width": "0.4",
                 "outline_width_unit": "MM", "joinstyle": "bevel"}
        options = "".join(f'<Option name="{k}" type="QString" value="{v}"/>' for k, v in props.items())
        legacy = "".join(f'<prop k="{k}" v="{v}"/>' for k, v in props.items())
        cats.append(f'   <category render="true" symbol="{n}" value={quoteattr(c.name)} label={quoteattr(c.name)}/>')
        symbols.append(f'   <symbol type="fill" name="{n}" alpha="1" clip_to_extent="1" force_rhr="0">'
                       f'<layer class="SimpleFill" pass="0" locked="0" enabled="1"><Option type="Map">{options}'
                       f"</Option>{legacy}</layer></symbol>")
    return (
        "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
        '<qgis version="3.22.0" styleCategories="Symbology">\n'
        f' <renderer-v2 type="categorizedSymbol" attr={quoteattr(field)} symbollevels="0" enableorderby="0" '
        'forceraster="0">\n'
        "  <categories>\n" + "\n".join(cats) + "\n  </categories>\n"
        "  <symbols>\n" + "\n".join(symbols) + "\n  </symbols>\n"
        "  <rotation/><sizescale/>\n"
        " </renderer-v2>\n"
        " <layerGeometryType>2</layerGeometryType>\n"
        "</qgis>\n"
    )


def write_layer_styles(gpkg: Path, styles: dict[str, str], geometry_column: str = "geom") -> None:
    """Store one default QML style per layer (``{layer: qml}``) in ``gpkg``."""
    con = sqlite3.connect(gpkg)
    try:
        with con:
            con.execute(_LAYER_STYLES_DDL)
            con.execute(
                "INSERT OR IGNORE INTO gpkg_contents (table_name, data_type, identifier) "
                "VALUES ('layer_styles', 'attributes', 'layer_styles')"
            )
            for layer, qml in styles.items():
                con.execute("DELETE FROM layer_styles WHERE f_table_name = ?", (layer,))
                con.execute(
                    "INSERT INTO layer_styles (f_table_catalog, f_table_schema, f_table_name, f_geometry_column,"
                    " styleName, styleQML, styleSLD, useAsDefault, description, owner, ui, update_time)"
                    " VALUES ('', '', ?, ?, ?, ?, '', 1, 'geoseg class style', '', '',"
                    " strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))",
                    (layer, geometry_column, layer, qml),
                )
    finally:
        con.close()


def paletted_raster_qml(classes, transparent_background: bool = True) -> str:
    """A QGIS paletted-raster style for a class raster: one entry per class, labelled with its name.

    QGIS loads ``NAME.qml`` beside ``NAME.tif`` as the layer's default style, so
    the legend lists exactly the model's classes instead of 256 grey values.
    Classes that are not vectorized (background) are transparent by default, so
    the imagery under the layer stays visible; nodata (255) is never drawn.
    """
    entries = []
    for c in classes:
        alpha = 0 if transparent_background and not c.vectorize else 255
        entries.append(f'        <paletteEntry value="{c.id}" color="{c.color}" alpha="{alpha}"'
                       f" label={quoteattr(c.name)}/>")
    return (
        "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
        '<qgis version="3.22.0" styleCategories="Symbology">\n'
        "  <pipe>\n"
        '    <rasterrenderer type="paletted" band="1" opacity="1" alphaBand="-1" nodataColor="">\n'
        "      <rasterTransparency/>\n"
        "      <colorPalette>\n" + "\n".join(entries) + "\n"
        "      </colorPalette>\n"
        "    </rasterrenderer>\n"
        '    <brightnesscontrast brightness="0" contrast="0" gamma="1"/>\n'
        '    <rasterresampler maxOversampling="2"/>\n'
        "  </pipe>\n"
        "  <blendMode>0</blendMode>\n"
        "</qgis>\n"
    )
