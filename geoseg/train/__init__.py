"""Training geoseg bundles from GeoTIFF scenes with vector or raster labels, or from chip folders."""

from geoseg.train.config import TrainConfig, load_config
from geoseg.train.loop import train

__all__ = ["TrainConfig", "load_config", "train"]
