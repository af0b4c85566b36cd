"""PyTorch reference of DANet's head: both attention branches and their three outputs.

Reproduces ``DANetHead`` of github.com/junfu1115/DANet (MIT licence; Fu et al., CVPR 2019)
with the original structure and state_dict keys, so that the head of an original DANet
checkpoint (kept there under ``head.``) loads unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from reference_torch.attention import CAM_Module, PAM_Module


class DANetHead(nn.Module):
    """Two branches over a shared input, position attention and channel attention.

    Args:
        in_channels: input channels; the branches work on ``in_channels // 4``, which
            position attention needs to be at least 8.
        out_channels: classes (channels of each of the three outputs).
        norm_layer: the normalisation, ``nn.BatchNorm2d`` as in the original.

    Returns ``(conv8(sa + sc), conv6(sa), conv7(sc))``: the fused prediction and the two
    auxiliary ones.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        norm_layer: type[nn.Module] = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        inter_channels = in_channels // 4
        if inter_channels < 8:
            raise ValueError(
                "DANetHead needs in_channels >= 32 (its position attention works on "
                f"in_channels // 4 >= 8 channels). Received: in_channels={in_channels}"
            )
        self.conv5a = _conv_norm_relu(in_channels, inter_channels, norm_layer)
        self.conv5c = _conv_norm_relu(in_channels, inter_channels, norm_layer)
        self.sa = PAM_Module(inter_channels)
        self.sc = CAM_Module(inter_channels)
        self.conv51 = _conv_norm_relu(inter_channels, inter_channels, norm_layer)
        self.conv52 = _conv_norm_relu(inter_channels, inter_channels, norm_layer)
        self.conv6 = _dropout_conv(inter_channels, out_channels)
        self.conv7 = _dropout_conv(inter_channels, out_channels)
        self.conv8 = _dropout_conv(inter_channels, out_channels)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        sa_conv = self.conv51(self.sa(self.conv5a(x)))  # (B, C/4, H, W)
        sc_conv = self.conv52(self.sc(self.conv5c(x)))
        sa_output = self.conv6(sa_conv)  # (B, out, H, W)
        sc_output = self.conv7(sc_conv)
        sasc_output = self.conv8(sa_conv + sc_conv)
        return sasc_output, sa_output, sc_output


def _conv_norm_relu(in_channels: int, out_channels: int, norm_layer) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        norm_layer(out_channels),
        nn.ReLU(),
    )


def _dropout_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Dropout2d(0.1, False), nn.Conv2d(in_channels, out_channels, 1))
