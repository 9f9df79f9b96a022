"""Footprint polygons of the 15 SpaceNet 1 Rio chips' building masks (../shared/data, SOURCES.md section 10).

The masks (uint8 {0, 255}, filled polygons) are all the chips' labels; each 4-connected component becomes
one polygon, in the chips' CRS (EPSG:4326). Touching buildings are one component in the masks, so they are
one polygon here too, as the chips' reference counts them. Run from the repository root:

    python configs/train/rio_chips/make_labels.py ../shared/data/spacenet_buildings_exploration

Only the chips ``rio_buildings.yaml`` trains and validates on get a file (img55-57, img63, img64); the test
chips img50-54 are scored against their masks and are never read by training.

Data: SpaceNet 1 (AOI_1_Rio), DigitalGlobe/Maxar WorldView-2 imagery and labels, CC BY-SA 4.0.
"""

import json
import sys
from pathlib import Path

import rasterio
from rasterio.features import shapes


def _rounded(c):
    """Coordinates to 1e-9 degree (0.1 mm), far below the 0.5 m pixels."""
    return round(c, 9) if isinstance(c, float) else [_rounded(v) for v in c]


CHIPS = ("img55", "img56", "img57", "img63", "img64")


def main(root: str) -> None:
    out = Path(__file__).parent
    for name in CHIPS:
        mask = Path(root, "building_mask_vis", f"3band_013022223130_Public_{name}.tif")
        with rasterio.open(mask) as src:
            m = (src.read(1, masked=False) > 0).astype("uint8")
            feats = [{"type": "Feature", "properties": {"building": "yes"},
                      "geometry": {"type": g["type"], "coordinates": _rounded(g["coordinates"])}}
                     for g, v in shapes(m, mask=m > 0, transform=src.transform, connectivity=4) if v == 1]
        (out / f"{name}.geojson").write_text(json.dumps(
            {"type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::4326"}},
             "features": feats}, separators=(",", ":")) + "\n")
        print(name, len(feats))


if __name__ == "__main__":
    main(sys.argv[1])
