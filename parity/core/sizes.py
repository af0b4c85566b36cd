"""What a module needs, known without importing a framework: its smallest channel count and
the memory its attention maps take (each bundled pair declares its ``ModuleSize`` in its
file in ``parity/pairs/``).

The command answers an impossible request (PAM on 4 channels, a 4096x4096 feature map) in
a fraction of a second, before TensorFlow and PyTorch are imported and before anything is
allocated, instead of failing minutes later on a petabyte allocation.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from parity.core.errors import TooLarge

BYTES_PER_ATTENTION_VALUE = 32
"""A check holds each attention map in float64 (the truth) and float32 (the reference and
the port), forward and backward: about 2 x (8 + 4 + 4) bytes per value."""


@dataclass(frozen=True)
class ModuleSize:
    """min_channels: the smallest input channel count the module accepts.
    attention_values: (batch, channels, H, W) -> values in its attention maps.
    max_channels: the largest, where there is one (the whole DANet reads 3-channel images)."""

    min_channels: int
    attention_values: Callable[[int, int, int, int], int]
    max_channels: int | None = None


def machine_memory() -> int | None:
    """Physical memory in bytes, or None where the system does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        return None


def human_bytes(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if count < 1000 or unit == "PB":
            return f"{count:.3g} {unit}"
        count /= 1000
    raise AssertionError("unreachable")


def check_fits(
    module: str,
    size: ModuleSize,
    shape: tuple[int, int, int, int],
    memory: int | None = None,
    option: str = "",
) -> None:
    """Raise TooLarge when ``module``'s attention (of ``size``) at ``shape`` (B, C, H, W)
    would take more than half of ``memory`` (default: this machine's); ``option``, the
    command's option that asked for the shape, starts the message."""
    memory = machine_memory() if memory is None else memory
    if memory is None:
        return
    needed = size.attention_values(*shape) * BYTES_PER_ATTENTION_VALUE
    if needed > memory / 2:
        raise TooLarge(
            (f"{option}: " if option else "")
            + f"{module} at {','.join(map(str, shape))} would need about {human_bytes(needed)} "
            f"for its attention maps alone, more than half of this machine's "
            f"{human_bytes(memory)}; use a smaller shape"
        )
