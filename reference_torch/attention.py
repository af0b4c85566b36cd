"""PyTorch reference of DANet's position and channel attention modules.

Reproduces the modules of Fu et al., "Dual Attention Network for Scene Segmentation"
(CVPR 2019, https://arxiv.org/abs/1809.02983), as published in github.com/junfu1115/DANet
(MIT licence). Written from the math, with the original class and parameter names so that
the original checkpoints load unchanged. This is the ground truth the Keras port is checked
against: do not "improve" it.
"""

from __future__ import annotations

import torch
from torch import nn

PAM_REDUCTION = 8
"""Query and key project ``in_dim`` channels to ``in_dim // 8``, as in the original."""


def _check_nchw(x: torch.Tensor, module: str) -> None:
    if x.dim() != 4:
        raise ValueError(
            f"{module} expects a 4D input (batch, C, H, W). Received: x.shape={tuple(x.shape)}"
        )


class PAM_Module(nn.Module):  # noqa: N801 -- the original's name, kept for checkpoints
    """Position attention: every position attends to every other position.

    Args:
        in_dim: input channels C; must be at least 8 because query and key have C // 8.
    """

    def __init__(self, in_dim: int) -> None:
        super().__init__()
        if in_dim < PAM_REDUCTION:
            raise ValueError(
                f"PAM_Module needs in_dim >= {PAM_REDUCTION} (query and key have "
                f"in_dim // {PAM_REDUCTION} channels). Received: in_dim={in_dim}"
            )
        self.query_conv = nn.Conv2d(in_dim, in_dim // PAM_REDUCTION, kernel_size=1)
        self.key_conv = nn.Conv2d(in_dim, in_dim // PAM_REDUCTION, kernel_size=1)
        self.value_conv = nn.Conv2d(in_dim, in_dim, kernel_size=1)
        self.gamma = nn.Parameter(torch.zeros(1))
        self.softmax = nn.Softmax(dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_nchw(x, "PAM_Module")
        B, C, H, W = x.size()
        N = H * W  # positions, flattened row-major: index h * W + w
        query = self.query_conv(x).view(B, -1, N).permute(0, 2, 1)  # (B, N, C')
        key = self.key_conv(x).view(B, -1, N)  # (B, C', N)
        energy = torch.bmm(query, key)  # (B, N, N)
        attention = self.softmax(energy)  # rows sum to 1
        value = self.value_conv(x).view(B, -1, N)  # (B, C, N)
        out = torch.bmm(value, attention.permute(0, 2, 1))  # (B, C, N)
        out = out.view(B, C, H, W)
        return self.gamma * out + x


class CAM_Module(nn.Module):  # noqa: N801 -- the original's name, kept for checkpoints
    """Channel attention: every channel attends to every other channel.

    Args:
        in_dim: input channels C (kept for the original's signature; any C works).
    """

    def __init__(self, in_dim: int) -> None:
        super().__init__()
        if in_dim < 1:
            raise ValueError(f"CAM_Module needs in_dim >= 1. Received: in_dim={in_dim}")
        self.gamma = nn.Parameter(torch.zeros(1))
        self.softmax = nn.Softmax(dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_nchw(x, "CAM_Module")
        B, C, H, W = x.size()
        query = x.view(B, C, -1)  # (B, C, N)
        key = x.view(B, C, -1).permute(0, 2, 1)  # (B, N, C)
        energy = torch.bmm(query, key)  # (B, C, C)
        # The authors' choice: row max minus energy, i.e. softmax(-energy).
        energy_new = torch.max(energy, -1, keepdim=True)[0].expand_as(energy) - energy
        attention = self.softmax(energy_new)  # (B, C, C)
        value = x.view(B, C, -1)  # (B, C, N)
        out = torch.bmm(attention, value).view(B, C, H, W)
        return self.gamma * out + x
