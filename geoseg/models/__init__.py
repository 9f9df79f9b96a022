"""Architecture registry, keyed by lowercase names.

``fcn8s``, ``fcn16s`` and ``fcn32s`` (Long et al., CVPR 2015) and ``segnet``
(Badrinarayanan et al., TPAMI 2017; encoder ``vgg16_bn`` or ``basic``) are geoseg's own;
every architecture of segmentation-models-pytorch (``unet``, ``deeplabv3``,
``deeplabv3plus``, ``fpn``, ...) is available under its smp name. Weights are
never downloaded: encoders are always built with ``encoder_weights=None``.

``geoseg.models`` imports neither torch nor an architecture until one of its names is used, so
reading a bundle's metadata and running a converted model (the engine path) never load torch.
"""

from __future__ import annotations

import importlib

_WHERE = {
    "FCN": "geoseg.models.fcn", "SegNet": "geoseg.models.segnet", "PixelLinear": "geoseg.models.linear",
    "available_architectures": "geoseg.models.registry", "create_model": "geoseg.models.registry",
    "default_encoder": "geoseg.models.registry", "output_stride": "geoseg.models.registry",
}


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'geoseg.models' has no attribute {name!r}")


__all__ = sorted(_WHERE)
