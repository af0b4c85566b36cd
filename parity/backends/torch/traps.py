"""Known traps of porting one PyTorch layer to Keras, each a prediction of what the trapped
port computes from the same input.

First-divergence localization (``parity.diagnosis.divergence``) finds the module where a port first
differs; a trap names *why* when its prediction matches the port's output there within the
tolerance policy. These are the bugs people report when a converted network "gives different
predictions": Keras' ``padding="same"`` on a strided layer (TensorFlow pads the extra row and
column at the bottom and right only, PyTorch both sides), BatchNorm at Keras' epsilon,
dilation on the wrong block, kernels reshaped instead of transposed by a converter.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch.nn import functional

KERAS_BN_EPSILON = 1e-3
DILATIONS = (1, 2, 4)


@dataclass(frozen=True)
class Trap:
    """A named bug and what the module computes under it (``predict(module, input, *rest)``:
    the module's own call arguments)."""

    name: str
    cause: str  # in a sentence, for the report
    predict: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor]


def _same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow's "same": output ceil(size / stride), the odd pixel at the end."""
    effective = (kernel - 1) * dilation + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def _keras_same(conv_or_pool, x, value: float = 0.0) -> torch.Tensor:
    kernel = _pair(conv_or_pool.kernel_size)
    stride = _pair(conv_or_pool.stride)
    dilation = _pair(getattr(conv_or_pool, "dilation", 1))
    top, bottom = _same_padding(x.shape[-2], kernel[0], stride[0], dilation[0])
    left, right = _same_padding(x.shape[-1], kernel[1], stride[1], dilation[1])
    return functional.pad(x, (left, right, top, bottom), value=value)


def _pair(value) -> tuple[int, int]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def _conv(module: torch.nn.Conv2d, x, *, weight=None, padding=None, dilation=None):
    return functional.conv2d(
        x,
        module.weight if weight is None else weight,
        module.bias,
        module.stride,
        module.padding if padding is None else padding,
        module.dilation if dilation is None else dilation,
        module.groups,
    )


def traps_for(module: torch.nn.Module) -> Iterator[Trap]:
    """The traps that could explain a divergence at ``module``."""
    if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and module.eps != KERAS_BN_EPSILON:
        yield Trap(
            "BatchNorm epsilon",
            f"BatchNorm at Keras' default epsilon {KERAS_BN_EPSILON:g} where PyTorch's is "
            f"{module.eps:g}",
            lambda m, x: functional.batch_norm(
                x, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, KERAS_BN_EPSILON
            ),
        )
    if isinstance(module, torch.nn.Conv2d):
        yield from _conv_traps(module)
    if getattr(module, "align_corners", None) and getattr(module, "mode", "") == "bilinear":
        yield Trap(
            "half-pixel resize",
            "bilinear resizing with half-pixel centres (Keras' resize, PyTorch's "
            "align_corners=False) where the reference aligns corners",
            _half_pixel_resize,
        )
    if isinstance(module, torch.nn.MaxPool2d) and max(_pair(module.stride)) > 1:
        yield Trap(
            "max-pool padding",
            'max pooling with Keras padding="same" (the extra row and column at the bottom '
            "and right only) where PyTorch pads both sides",
            lambda m, x: functional.max_pool2d(
                _keras_same(m, x, value=float("-inf")), m.kernel_size, m.stride, 0, m.dilation
            ),
        )


def _half_pixel_resize(module, x, size=None):
    """``nn.Upsample`` (size or scale in the module) or a resize called with its size."""
    scale = None if size is not None else getattr(module, "scale_factor", None)
    size = size if size is not None else getattr(module, "size", None)
    return functional.interpolate(x, size, scale, mode="bilinear", align_corners=False)


def _conv_traps(module: torch.nn.Conv2d) -> Iterator[Trap]:
    kernel, stride = _pair(module.kernel_size), _pair(module.stride)
    if max(stride) > 1 and max(kernel) > 1:
        yield Trap(
            "strided 'same' padding",
            f'a stride-{stride[0]} convolution with Keras padding="same" (the extra row and '
            "column at the bottom and right only) where PyTorch pads both sides",
            lambda m, x: _conv(m, _keras_same(m, x), padding=0),
        )
    dilation = _pair(module.dilation)[0]
    if max(kernel) > 1 and _pair(module.padding)[0] == dilation * (kernel[0] - 1) // 2:
        for other in DILATIONS:
            if other != dilation:
                yield Trap(
                    "dilation on the wrong block",
                    f"dilation {other} where the reference's layer has {dilation}",
                    lambda m, x, d=other: _conv(m, x, padding=d * (kernel[0] - 1) // 2, dilation=d),
                )
    out, inp, height, width = module.weight.shape
    yield Trap(
        "kernel reshaped",
        "the kernel reshaped to Keras' (kH, kW, in, out) instead of transposed (a "
        "converter's reshape where it needs a transpose)",
        lambda m, x: _conv(
            m, x, weight=m.weight.reshape(height, width, inp, out).permute(3, 2, 0, 1)
        ),
    )
