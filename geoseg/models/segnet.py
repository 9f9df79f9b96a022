"""SegNet (Badrinarayanan, Kendall and Cipolla, TPAMI 2017).

An encoder-decoder whose decoder upsamples with the **max-pooling indices** of
the matching encoder stage: each pooled value goes back to the position its
maximum came from, the rest of the window is zero, and the decoder's
convolutions densify that sparse map. There are no learned deconvolutions and
no skip concatenations; the indices are all the decoder gets from the encoder.

Encoders:

- ``vgg16_bn`` (the paper's: the 13 convolutions of VGG-16 with batch norm),
  and any other VGG encoder of segmentation-models-pytorch's registry
  (``vgg11``, ``vgg13_bn``, ``vgg19``, ...), whose downsampling is max pooling.
  The registry's encoder and its state-dict keys are used as they are; its
  pooling layers are run with ``return_indices=True``. Output stride 32.
- ``basic``: SegNet-Basic, the paper's small variant (four stages of one 7x7
  convolution of 64 channels each, batch norm, ReLU and 2x2 pooling; a decoder
  of unpooling and one 7x7 convolution with batch norm per stage, no ReLU).
  Output stride 16; about 1.4 M parameters, for CPUs.

The decoder mirrors the encoder: stage ``s`` unpools with stage ``s``'s
indices, then runs as many 3x3 convolution + batch norm + ReLU layers as the
encoder stage had, the last one narrowing to the channels of the stage above.
A final 3x3 convolution scores the classes (the paper's softmax is the loss's).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

VGG_ENCODERS = ("vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn")


def _conv_bn_relu(cin: int, cout: int, kernel: int = 3, relu: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False), nn.BatchNorm2d(cout)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def unpool(x: torch.Tensor, indices: torch.Tensor, size: torch.Size) -> torch.Tensor:
    """``F.max_unpool2d``: each value goes to the flat position ``indices`` holds, in a zero map of ``size``.

    Written as one scatter because torch's own op cannot be traced for export (torch 2.x: its output-size
    check fails under ``torch.jit.trace``), while a scatter converts to ONNX and OpenVINO as it is.
    """
    n, c = x.shape[:2]
    out = x.new_zeros(n, c, size[0] * size[1])
    return out.scatter(2, indices.flatten(2), x.flatten(2)).view(n, c, size[0], size[1])


class _Stages(nn.Module):
    """An encoder as stages ending in 2x2 max pooling; ``forward`` returns the pooled map and, per stage,
    the indices and the size before pooling."""

    def __init__(self, stages: list[nn.Module]) -> None:
        super().__init__()
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Size]]]:
        switches = []
        for stage in self.stages:
            x = stage(x)
            size = x.shape[-2:]
            x, idx = F.max_pool2d(x, kernel_size=2, stride=2, return_indices=True)
            switches.append((idx, size))
        return x, switches


class _VGGStages(nn.Module):
    """segmentation-models-pytorch's VGG encoder, run stage by stage with pooling indices.

    ``features`` keeps the registry's layer order and state-dict keys; every ``nn.MaxPool2d`` in it ends a stage.
    """

    def __init__(self, name: str, in_channels: int) -> None:
        super().__init__()
        from segmentation_models_pytorch.encoders import get_encoder

        enc = get_encoder(name, in_channels=in_channels, depth=5, weights=None)
        self.features = enc.features
        self.stage_channels: list[int] = []
        self.stage_convs: list[int] = []
        convs, last = 0, in_channels
        for m in self.features:
            if isinstance(m, nn.Conv2d):
                convs, last = convs + 1, m.out_channels
            elif isinstance(m, nn.MaxPool2d):
                self.stage_channels.append(last)
                self.stage_convs.append(convs)
                convs = 0

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Size]]]:
        switches = []
        for m in self.features:
            if isinstance(m, nn.MaxPool2d):
                size = x.shape[-2:]
                x, idx = F.max_pool2d(x, kernel_size=2, stride=2, return_indices=True)
                switches.append((idx, size))
            else:
                x = m(x)
        return x, switches


class SegNet(nn.Module):
    """SegNet on a VGG encoder of the registry, or SegNet-Basic (``encoder="basic"``).

    Args:
        encoder: ``basic`` or a VGG encoder name (``vgg16_bn`` is the paper's).
        in_channels: input bands.
        classes: output classes.
    """

    def __init__(self, encoder: str = "vgg16_bn", in_channels: int = 3, classes: int = 2) -> None:
        super().__init__()
        if encoder == "basic":
            widths = [64, 64, 64, 64]
            ins = [in_channels, *widths[:-1]]
            self.encoder: nn.Module = _Stages([_conv_bn_relu(a, b, 7) for a, b in zip(ins, widths)])
            # decoder stage s: unpool with stage s's indices, one 7x7 convolution + BN (no ReLU, as in the paper)
            self.decoder = nn.ModuleList([_conv_bn_relu(64, 64, 7, relu=False) for _ in widths])
        elif encoder in VGG_ENCODERS:
            self.encoder = _VGGStages(encoder, in_channels)
            chans, convs = self.encoder.stage_channels, self.encoder.stage_convs
            above = [chans[0], *chans[:-1]]  # the width the decoder stage hands to the stage above it
            self.decoder = nn.ModuleList([
                nn.Sequential(*[_conv_bn_relu(c, c if k < n - 1 else up) for k in range(n)])
                for c, n, up in zip(chans, convs, above)
            ])
        else:
            raise ValueError(f"segnet needs an encoder whose downsampling is max pooling: basic or one of "
                             f"{', '.join(VGG_ENCODERS)}, not {encoder!r}")
        self.head = nn.Conv2d(64 if encoder == "basic" else self.encoder.stage_channels[0], classes, 3, padding=1)
        self.output_stride = 2 ** len(self.decoder)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(*self.encoder(x))

    def decode(self, x: torch.Tensor, switches: list[tuple[torch.Tensor, torch.Size]]) -> torch.Tensor:
        """The decoder alone, on pooled features and the switches it unpools with (for tests and studies)."""
        for stage, (idx, size) in zip(reversed(self.decoder), reversed(switches)):
            x = stage(unpool(x, idx, size))
        return self.head(x)
