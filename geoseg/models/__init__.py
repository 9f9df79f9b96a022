"""Architecture registry, keyed by lowercase names.

``fcn8s``, ``fcn16s`` and ``fcn32s`` (Long et al., CVPR 2015) and ``segnet``
(Badrinarayanan et al., TPAMI 2017; encoder ``vgg16_bn`` or ``basic``) are geoseg's own;
every architecture of segmentation-models-pytorch (``unet``, ``deeplabv3``,
``deeplabv3plus``, ``fpn``, ...) is available under its smp name. Weights are
never downloaded: encoders are always built with ``encoder_weights=None``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from geoseg.errors import GeosegError
from geoseg.models.fcn import FCN
from geoseg.models.segnet import SegNet


class PixelLinear(nn.Module):
    """A per-pixel linear classifier (one 1x1 convolution).

    Useful as a transparent baseline, as the "null model" of the benchmarks,
    and in tests, where hand-set weights make every pixel's class a known
    function of its values.
    """

    def __init__(self, encoder: str = "none", in_channels: int = 3, classes: int = 2) -> None:
        super().__init__()
        self.head = nn.Conv2d(in_channels, classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)


_OWN: dict[str, Callable[..., nn.Module]] = {
    "conv1x1": PixelLinear,
    "fcn32s": lambda **kw: FCN(variant="32s", **kw),
    "fcn16s": lambda **kw: FCN(variant="16s", **kw),
    "fcn8s": lambda **kw: FCN(variant="8s", **kw),
    "segnet": SegNet,
}


def _smp_architectures() -> dict[str, type]:
    import warnings

    with warnings.catch_warnings():
        # huggingface_hub, imported by smp, imports tqdm.auto, which warns in a notebook without ipywidgets
        warnings.filterwarnings("ignore", message="IProgress not found")
        from segmentation_models_pytorch import MODEL_ARCHITECTURES_MAPPING

    return dict(MODEL_ARCHITECTURES_MAPPING)


DEFAULT_ENCODERS = {"maskrcnn": "resnet50", "segnet": "vgg16_bn"}


def default_encoder(architecture: str) -> str:
    """The encoder ``model init`` builds when none is given: the paper's for SegNet, ResNet-34 for smp's."""
    return DEFAULT_ENCODERS.get(architecture.lower(), "resnet34")


def available_architectures() -> list[str]:
    from geoseg.models.maskrcnn import INSTANCE_ARCHITECTURES

    return sorted({*_OWN, *_smp_architectures(), *INSTANCE_ARCHITECTURES})


def create_model(
    architecture: str,
    encoder: str,
    in_channels: int,
    classes: int,
    params: dict | None = None,
) -> nn.Module:
    """Build an untrained model; fails with the valid names on an unknown one."""
    name = architecture.lower()
    params = dict(params or {})
    from geoseg.models.maskrcnn import create_instance_model, is_instance_architecture

    if is_instance_architecture(name):
        return create_instance_model(name, encoder, in_channels, classes, params=params)
    try:
        if name in _OWN:
            return _OWN[name](encoder=encoder, in_channels=in_channels, classes=classes, **params)
        smp_archs = _smp_architectures()
        if name in smp_archs:
            return smp_archs[name](
                encoder_name=encoder,
                encoder_weights=None,
                in_channels=in_channels,
                classes=classes,
                **params,
            )
    except (KeyError, ValueError, TypeError) as exc:
        msg = exc.args[0] if exc.args else exc
        raise GeosegError(f"cannot build {name} with encoder {encoder!r}: {msg}") from None
    raise GeosegError(
        f"unknown architecture {architecture!r}; choose one of: {', '.join(available_architectures())}"
    )


def output_stride(model: nn.Module) -> int:
    """The factor input sizes must be divisible by (32 for most encoders)."""
    if isinstance(model, PixelLinear):
        return 1
    if isinstance(getattr(model, "output_stride", None), int):  # geoseg's own, e.g. SegNet-Basic's 16
        return model.output_stride
    enc = getattr(model, "encoder", None)
    return int(getattr(enc, "output_stride", 32) or 32)


__all__ = ["FCN", "PixelLinear", "SegNet", "available_architectures", "create_model", "default_encoder", "output_stride"]
