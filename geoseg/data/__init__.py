"""Embedded data: the SpaceNet Atlanta demo chip, its footprints, and the default model."""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
ATLANTA_IMAGE = HERE / "atlanta" / "sample_geotiff.tif"
ATLANTA_LABELS = HERE / "atlanta" / "geotiff_labels.geojson"
DEFAULT_MODEL = HERE / "models" / "atlanta-buildings"
