"""Fully convolutional networks, FCN-32s/16s/8s (Long, Shelhamer and Darrell, CVPR 2015).

The VGG backbone of the paper is replaced by any segmentation-models-pytorch
encoder. The paper's structure is kept: a convolutional "fc6/fc7" head on the
stride-32 features, 1x1 score layers, learned upsampling by transposed
convolutions initialised to bilinear interpolation, and skip fusion of the
stride-16 (FCN-16s) and stride-8 (FCN-8s) score maps.
"""

from __future__ import annotations

import torch
from torch import nn


def _bilinear_kernel(channels: int, kernel_size: int) -> torch.Tensor:
    """Per-channel bilinear upsampling weights, as in the reference FCN code."""
    factor = (kernel_size + 1) // 2
    center = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    og = torch.arange(kernel_size, dtype=torch.float32)
    filt_1d = 1 - (og - center).abs() / factor
    filt = filt_1d[:, None] * filt_1d[None, :]
    weight = torch.zeros(channels, channels, kernel_size, kernel_size)
    weight[range(channels), range(channels)] = filt
    return weight


class _Up(nn.ConvTranspose2d):
    """Learned x``factor`` upsampling whose output is exactly ``factor`` times the input."""

    def __init__(self, channels: int, factor: int) -> None:
        super().__init__(
            channels, channels, kernel_size=2 * factor, stride=factor, padding=factor // 2, bias=False
        )
        with torch.no_grad():
            self.weight.copy_(_bilinear_kernel(channels, 2 * factor))


class FCN(nn.Module):
    """FCN-32s, FCN-16s or FCN-8s on an smp encoder.

    Args:
        variant: ``"32s"``, ``"16s"`` or ``"8s"``.
        encoder: an smp encoder name (``resnet34``, ``efficientnet-b0``, ...).
        in_channels: input bands.
        classes: output classes.
        head_channels: width of the fc6/fc7 convolutions.
        dropout: dropout after fc6 and fc7, as in the paper.
    """

    def __init__(
        self,
        variant: str = "8s",
        encoder: str = "resnet34",
        in_channels: int = 3,
        classes: int = 21,
        head_channels: int = 512,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        from segmentation_models_pytorch.encoders import get_encoder

        if variant not in ("32s", "16s", "8s"):
            raise ValueError(f"FCN variant must be 32s, 16s or 8s, not {variant!r}")
        self.variant = variant
        self.encoder = get_encoder(encoder, in_channels=in_channels, depth=5, weights=None)
        ch = self.encoder.out_channels
        self.fc = nn.Sequential(
            nn.Conv2d(ch[5], head_channels, 3, padding=1),  # fc6, as a convolution
            nn.ReLU(inplace=True),
            nn.Dropout2d(dropout),
            nn.Conv2d(head_channels, head_channels, 1),  # fc7
            nn.ReLU(inplace=True),
            nn.Dropout2d(dropout),
        )
        self.score32 = nn.Conv2d(head_channels, classes, 1)
        if variant == "32s":
            self.up_final = _Up(classes, 32)
        else:
            self.up32 = _Up(classes, 2)
            self.score16 = nn.Conv2d(ch[4], classes, 1)
            if variant == "16s":
                self.up_final = _Up(classes, 16)
            else:
                self.up16 = _Up(classes, 2)
                self.score8 = nn.Conv2d(ch[3], classes, 1)
                self.up_final = _Up(classes, 8)
        # Skip scores start at zero so a fresh FCN-8s equals its FCN-32s trunk (paper, section 4.2).
        for name in ("score16", "score8"):
            layer = getattr(self, name, None)
            if layer is not None:
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.encoder(x)
        score = self.score32(self.fc(f[5]))
        if self.variant != "32s":
            score = self.up32(score) + self.score16(f[4])
            if self.variant == "8s":
                score = self.up16(score) + self.score8(f[3])
        return self.up_final(score)
