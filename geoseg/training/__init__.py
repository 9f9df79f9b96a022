"""Training geoseg bundles from GeoTIFF scenes with vector or raster labels, chip folders or benchmarks.

``train`` (``geoseg.train``) routes a config to the semantic loop (:mod:`geoseg.training.loop`) or to
instance training (:mod:`geoseg.training.instances`); both read configs (:mod:`.config`) and data
(:mod:`.data`) and save and resume through :mod:`.checkpoints`.
"""

from geoseg.training.config import TrainConfig, load_config
from geoseg.training.loop import train

__all__ = ["TrainConfig", "load_config", "train"]
