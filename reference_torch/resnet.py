"""PyTorch reference of DANet's backbone: the dilated ResNet of output stride 8.

Reproduces ``ResNet`` and ``Bottleneck`` of github.com/junfu1115/DANet
(``encoding/models/backbone/resnet.py``, MIT licence, after Hang Zhang's PyTorch-Encoding)
as DANet builds it (``dilated=True``, no ResNeSt options), with the original state_dict keys:

- the deep stem: three 3x3 convolutions (stride 2, 1, 1; ``width``, ``width``,
  ``2 * width`` filters) with BatchNorm and ReLU between them, then ``bn1``, ReLU and a 3x3
  max pool of stride 2 padded by 1 (the latest original's default, ``deep_stem=True``;
  ``deep_stem=False`` gives the 7x7 stem of its earlier versions);
- bottlenecks with the stride on the 3x3 convolution and a 1x1 strided convolution with
  BatchNorm as the shortcut where the shape changes;
- layer3 dilated by 2 and layer4 by 4, except the first block of each, which the original
  dilates by half as much (1 in layer3, 2 in layer4): output stride 8.

The classifier is left out: DANet sets ``pretrained.fc = None``, so its checkpoints hold no
``pretrained.fc.*`` key, and the global pool has no state.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

BLOCKS = {"resnet50": (3, 4, 6, 3), "resnet101": (3, 4, 23, 3)}
"""Bottlenecks per stage of each backbone DANet names."""

EXPANSION = 4
STAGE_DILATIONS = (1, 1, 2, 4)
STAGE_STRIDES = (1, 2, 1, 1)


def first_block_dilation(dilation: int) -> int:
    """The original dilates a stage's first block by half its dilation (1 for 1 and 2)."""
    return 1 if dilation in (1, 2) else dilation // 2


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided, dilated), 1x1 expand by 4, each with BatchNorm; ReLU after
    the first two and after the residual sum."""

    def __init__(
        self,
        in_channels: int,
        planes: int,
        stride: int = 1,
        dilation: int = 1,
        downsample: nn.Module | None = None,
        norm_layer: type[nn.Module] = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.bn1 = norm_layer(planes)
        self.conv2 = nn.Conv2d(
            planes, planes, 3, stride=stride, padding=dilation, dilation=dilation, bias=False
        )
        self.bn2 = norm_layer(planes)
        self.conv3 = nn.Conv2d(planes, planes * EXPANSION, 1, bias=False)
        self.bn3 = norm_layer(planes * EXPANSION)
        self.relu = nn.ReLU()
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))  # (B, planes, H / stride, W / stride)
        out = self.bn3(self.conv3(out))
        residual = x if self.downsample is None else self.downsample(x)
        return self.relu(out + residual)


class DilatedResNet(nn.Module):
    """The backbone, returning the last stage's features ``(B, 32 * width, ~H/8, ~W/8)``.

    Args:
        blocks: bottlenecks per stage, e.g. ``BLOCKS["resnet50"]``.
        width: base channels (64 in the original); stages have ``width * 2**i`` planes and
            ``4 * width * 2**i`` outputs. Narrower widths keep the structure, for tests.
        deep_stem: the three-convolution stem (the original's default) or one 7x7.
        norm_layer: the normalisation, ``nn.BatchNorm2d`` as in the original.
    """

    def __init__(
        self,
        blocks: Sequence[int],
        width: int = 64,
        deep_stem: bool = True,
        norm_layer: type[nn.Module] = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        if len(blocks) != 4 or min(blocks) < 1:
            raise ValueError(f"Expected 4 positive block counts. Received: blocks={blocks}")
        stem_channels = 2 * width if deep_stem else width
        if deep_stem:
            self.conv1 = nn.Sequential(
                nn.Conv2d(3, width, 3, stride=2, padding=1, bias=False),
                norm_layer(width),
                nn.ReLU(),
                nn.Conv2d(width, width, 3, padding=1, bias=False),
                norm_layer(width),
                nn.ReLU(),
                nn.Conv2d(width, stem_channels, 3, padding=1, bias=False),
            )
        else:
            self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = norm_layer(stem_channels)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_channels = stem_channels
        for index, count in enumerate(blocks):
            planes = width * 2**index
            stage = _stage(
                in_channels,
                planes,
                count,
                STAGE_STRIDES[index],
                STAGE_DILATIONS[index],
                norm_layer,
            )
            setattr(self, f"layer{index + 1}", stage)
            in_channels = planes * EXPANSION
        self.out_channels = in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (B, 2w, ~H/4, ~W/4)
        x = self.layer2(self.layer1(x))  # (B, 8w, ~H/8, ~W/8)
        return self.layer4(self.layer3(x))  # (B, 32w, ~H/8, ~W/8)


def _stage(in_channels, planes, count, stride, dilation, norm_layer) -> nn.Sequential:
    downsample = None
    if stride != 1 or in_channels != planes * EXPANSION:
        downsample = nn.Sequential(
            nn.Conv2d(in_channels, planes * EXPANSION, 1, stride=stride, bias=False),
            norm_layer(planes * EXPANSION),
        )
    first = Bottleneck(
        in_channels, planes, stride, first_block_dilation(dilation), downsample, norm_layer
    )
    rest = [
        Bottleneck(planes * EXPANSION, planes, 1, dilation, None, norm_layer)
        for _ in range(count - 1)
    ]
    return nn.Sequential(first, *rest)
