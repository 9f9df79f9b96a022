"""Training geoseg bundles from GeoTIFF scenes with vector or raster labels, or from chip folders."""

from geoseg import _command_module
from geoseg.train.config import TrainConfig, load_config
from geoseg.train.loop import train

__all__ = ["TrainConfig", "load_config", "train"]

_command_module(__name__)  # ``geoseg.train(...)`` calls train() (see geoseg/__init__.py)
