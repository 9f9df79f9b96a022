"""A per-pixel linear classifier: the transparent baseline and null model."""

from __future__ import annotations

import torch
from torch import nn


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
