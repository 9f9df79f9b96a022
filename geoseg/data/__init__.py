"""Embedded data: the demo scenes, their footprints, and the packaged models.

A packaged model's name (``buildings-rgb``, ``atlanta-buildings``) works wherever
a bundle path does; :func:`packaged_models` lists them.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
MODELS = HERE / "models"
ATLANTA_IMAGE = HERE / "atlanta" / "sample_geotiff.tif"
ATLANTA_LABELS = HERE / "atlanta" / "geotiff_labels.geojson"
RIO_IMAGE = HERE / "rio" / "rio_heldout.tif"
RIO_LABELS = HERE / "rio" / "rio_heldout_buildings.geojson"
DEFAULT_MODEL = MODELS / "buildings-rgb"
PAN_MODEL = MODELS / "atlanta-buildings"


def packaged_models() -> dict[str, Path]:
    """Name -> bundle folder of every model shipped with geoseg."""
    return {p.name: p for p in sorted(MODELS.iterdir()) if (p / "geoseg.json").is_file()}
