"""The architecture registry: names to model builders, importing torch only when a model is built.

See :mod:`geoseg.models` for the architectures.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from geoseg.errors import GeosegError
from geoseg.models.names import INSTANCE_ARCHITECTURES, is_instance_architecture

if TYPE_CHECKING:
    from torch import nn

__all__ = ["INSTANCE_ARCHITECTURES", "available_architectures", "create_model", "default_encoder",
           "is_instance_architecture", "output_stride"]


def _pixel_linear(**kw) -> nn.Module:
    from geoseg.models.linear import PixelLinear

    return PixelLinear(**kw)


def _fcn(variant: str) -> Callable[..., nn.Module]:
    def build(**kw) -> nn.Module:
        from geoseg.models.fcn import FCN

        return FCN(variant=variant, **kw)

    return build


def _segnet(**kw) -> nn.Module:
    from geoseg.models.segnet import SegNet

    return SegNet(**kw)


# geoseg's own architectures; each imports torch only when built (the engine path never builds one)
_OWN: dict[str, Callable[..., nn.Module]] = {
    "conv1x1": _pixel_linear,
    "fcn32s": _fcn("32s"),
    "fcn16s": _fcn("16s"),
    "fcn8s": _fcn("8s"),
    "segnet": _segnet,
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
    if is_instance_architecture(name):
        from geoseg.models.maskrcnn import create_instance_model

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
    from geoseg.models.linear import PixelLinear

    if isinstance(model, PixelLinear):
        return 1
    if isinstance(getattr(model, "output_stride", None), int):  # geoseg's own, e.g. SegNet-Basic's 16
        return model.output_stride
    enc = getattr(model, "encoder", None)
    return int(getattr(enc, "output_stride", 32) or 32)
