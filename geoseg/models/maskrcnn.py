"""Instance models: torchvision's Mask R-CNN (any band count, no resizing, nothing downloaded) and an oracle.

``maskrcnn`` is torchvision's ``maskrcnn_resnet50_fpn`` (``encoder: resnet50``), ``_v2``
(``resnet50_v2``) or a lighter MobileNetV3-Large FPN backbone (``mobilenet_v3_large``), always
built with ``weights=None, weights_backbone=None``. The first convolution takes the bundle's band
count and the transform normalises with the bundle's per-band mean and std (torchgeo #2749), and
the transform never resizes: tiles reach the network at their native resolution.

``components`` is a parameter-free "model": the 4-connected components of band 1 above a
threshold, each an instance of class 1 with score 1. It is exact and deterministic, so tiled
prediction can be checked against the whole scene (tests, benchmarks).
"""

from __future__ import annotations

import torch
from torch import nn

from geoseg.errors import GeosegError
from geoseg.models.names import INSTANCE_ARCHITECTURES

BACKBONES = ("resnet50", "resnet50_v2", "mobilenet_v3_large")


def _no_resize_transform(mean, std, tile_size: int):
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    class NativeResolution(GeneralizedRCNNTransform):
        """torchvision's detection transform without its resize: the model sees tiles as they are."""

        def resize(self, image, target=None):
            return image, target

    return NativeResolution(tile_size, tile_size, list(mean), list(std))


def _first_conv(module: nn.Module) -> tuple[nn.Module, str, nn.Conv2d]:
    for name, m in module.named_modules():
        if isinstance(m, nn.Conv2d):
            parent = module.get_submodule(name.rsplit(".", 1)[0]) if "." in name else module
            return parent, name.rsplit(".", 1)[-1], m
    raise GeosegError("the backbone has no convolution")


def build_maskrcnn(encoder: str = "resnet50", in_channels: int = 3, classes: int = 2, mean=None, std=None,
                   tile_size: int = 512, **params) -> nn.Module:
    """torchvision Mask R-CNN for ``classes`` classes (background included) on ``in_channels`` bands."""
    from torchvision.models.detection import MaskRCNN, maskrcnn_resnet50_fpn, maskrcnn_resnet50_fpn_v2

    mean = list(mean) if mean is not None else [0.0] * in_channels
    std = list(std) if std is not None else [1.0] * in_channels
    kw = {"box_detections_per_img": int(params.pop("detections_per_tile", 100))}
    if params:
        raise GeosegError(f"unknown maskrcnn parameter {sorted(params)[0]!r} (allowed: detections_per_tile)")
    if encoder == "resnet50":
        model = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=classes, **kw)
    elif encoder == "resnet50_v2":
        model = maskrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None, num_classes=classes, **kw)
    elif encoder == "mobilenet_v3_large":
        from torchvision.models import mobilenet_v3_large
        from torchvision.models.detection.anchor_utils import AnchorGenerator
        from torchvision.models.detection.backbone_utils import _mobilenet_extractor

        backbone = _mobilenet_extractor(mobilenet_v3_large(weights=None), True, 6)
        anchors = AnchorGenerator(((32, 64, 128, 256, 512),) * 3, ((0.5, 1.0, 2.0),) * 3)
        model = MaskRCNN(backbone, num_classes=classes, rpn_anchor_generator=anchors, **kw)
    else:
        raise GeosegError(f"unknown maskrcnn backbone {encoder!r}; choose one of: {', '.join(BACKBONES)}")
    if in_channels != 3:
        parent, name, conv = _first_conv(model.backbone)
        setattr(parent, name, nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                                        conv.padding, bias=conv.bias is not None))
    model.transform = _no_resize_transform(mean, std, tile_size)
    return model


class Components(nn.Module):
    """The oracle: 4-connected components of band 1 above ``threshold`` (raw pixel values)."""

    def __init__(self, in_channels: int = 1, classes: int = 2, threshold: float = 127.5, **_) -> None:
        super().__init__()
        self.register_buffer("threshold", torch.tensor(float(threshold)))

    def forward(self, images: list[torch.Tensor]) -> list[dict]:
        """torchvision's output keys, with ``crops`` (y0, x0, boolean mask) in place of full-tile ``masks``."""
        from scipy import ndimage

        out = []
        for im in images:
            labels, n = ndimage.label((im[0] > self.threshold).cpu().numpy())
            crops, boxes = [], []
            for i, sl in enumerate(ndimage.find_objects(labels), 1):
                crops.append((sl[0].start, sl[1].start, labels[sl] == i))
                boxes.append([sl[1].start, sl[0].start, sl[1].stop, sl[0].stop])
            out.append({"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                        "labels": torch.ones(n, dtype=torch.int64), "scores": torch.ones(n), "crops": crops})
        return out


def create_instance_model(architecture: str, encoder: str, in_channels: int, classes: int, mean=None, std=None,
                          tile_size: int = 512, params: dict | None = None) -> nn.Module:
    name = architecture.lower()
    params = dict(params or {})
    if name == "maskrcnn":
        return build_maskrcnn(encoder, in_channels, classes, mean, std, tile_size, **params)
    if name == "components":
        return Components(in_channels, classes, **params)
    raise GeosegError(f"unknown instance architecture {architecture!r} ({', '.join(INSTANCE_ARCHITECTURES)})")
