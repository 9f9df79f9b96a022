"""geoseg: tiled, blended, Dask-scheduled segmentation of large GeoTIFFs."""

__version__ = "0.1.0"

from geoseg.errors import GeosegError  # noqa: E402

__all__ = ["GeosegError", "__version__"]
