"""PyTorch reference of the whole DANet: dilated ResNet, dual attention head, upsampling.

Reproduces ``DANet`` of github.com/junfu1115/DANet (``encoding/models/sseg/danet.py`` and
``base.py``; MIT licence; Fu et al., "Dual Attention Network for Scene Segmentation",
CVPR 2019, https://arxiv.org/abs/1809.02983) in evaluation and training use, with the
original state_dict keys (``pretrained.conv1.0.weight``, ``pretrained.layer1.0.conv1.weight``,
..., ``head.conv5a.0.weight``), so that an original checkpoint loads unchanged. The
auxiliary FCN head and the SE loss (``aux``, ``se_loss``) are off in DANet's configuration
and are not reproduced.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional

from reference_torch.head import DANetHead
from reference_torch.resnet import BLOCKS, DilatedResNet


class AlignedResize(nn.Module):
    """Bilinear resizing to ``size`` with ``align_corners=True``: the original's
    ``upsample(x, size, mode="bilinear", align_corners=True)``, as a module so that hooks
    (first-divergence localization) see it; it holds no state."""

    mode = "bilinear"
    align_corners = True

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return functional.interpolate(x, size, mode=self.mode, align_corners=self.align_corners)


class DANet(nn.Module):
    """Dilated ResNet (output stride 8), DANet's head, and the three predictions resized
    bilinearly to the input with ``align_corners=True``, as the original resizes them.

    Args:
        nclass: classes (channels of each output).
        backbone: ``"resnet50"`` or ``"resnet101"``.
        width: the backbone's base channels (64 in the original; the head sees ``32 * width``,
            2048). A narrower network keeps the structure, for cheap tests.
        deep_stem: the backbone's three-convolution stem (the original's default).
        blocks: bottlenecks per stage, replacing the backbone's (for tests); default the
            backbone's.
        norm_layer: the normalisation, ``nn.BatchNorm2d`` as in the original.

    Returns ``(fused, position branch, channel branch)``, each ``(B, nclass, H, W)``.
    """

    def __init__(
        self,
        nclass: int,
        backbone: str = "resnet50",
        width: int = 64,
        deep_stem: bool = True,
        blocks: Sequence[int] | None = None,
        norm_layer: type[nn.Module] = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        if backbone not in BLOCKS:
            raise ValueError(f"Expected one of {set(BLOCKS)}. Received: backbone={backbone!r}")
        self.pretrained = DilatedResNet(
            BLOCKS[backbone] if blocks is None else blocks, width, deep_stem, norm_layer
        )
        self.head = DANetHead(self.pretrained.out_channels, nclass, norm_layer)
        self.resize = AlignedResize()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        H, W = x.shape[-2:]
        features = self.pretrained(x)  # (B, 32w, ~H/8, ~W/8)
        # Each (B, nclass, ~H/8, ~W/8) -> (B, nclass, H, W).
        return tuple(self.resize(y, (H, W)) for y in self.head(features))
