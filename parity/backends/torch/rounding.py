"""Float32 rounding noise, simulated in float64: Monte Carlo arithmetic on the reference.

The float64 reference is run again while every operation, forward and backward, rounds its
result at random at float32's precision: each result is multiplied by (1 + d) with d
uniform in [-eps32, eps32] (Parker's Monte Carlo arithmetic). A reduction (a sum, a matrix
product, a convolution and its gradients) is modelled as float32 computes it in the worst
common order, one term after another, each partial sum rounded: a result sum(t_k) comes
out as sum(t_k * (1 + D_k)) with D_k the sum of the roundings of the partial sums that
t_k is part of. Fused kernels whose internal sums matter (softmax and its gradient) are
expanded into their steps.

How far this run lands from the truth is the error a faithful float32 port may make in any
summation order. It is large exactly where the float32 reference's own error is small by
luck: a result that comes out of heavy cancellation (the gradient w.r.t. ``query_conv.bias``
at small input scales, the gradient w.r.t. ``gamma``), or a long reduction that PyTorch
accumulates in float64 on the CPU and TensorFlow in float32. ``parity.core.policy`` uses it as
the floor of the tolerance.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

from parity.core.policy import EPS32

"""Relative spacing of the compute dtypes (numpy's eps convention), for the noise model."""
UNDERFLOW = {"float32": 2.0**-126, "float16": 2.0**-24, "bfloat16": 2.0**-126}
"""The absolute error a rounded result near zero may carry, whatever its size: float32 and
bfloat16 results below the smallest normal number (2**-126, 1.2e-38) are flushed to zero
by TensorFlow on a CPU (and by GPU kernels built with flush-to-zero), where PyTorch keeps
them; float16, computed in float32 and stored in float16, keeps its subnormals, spaced
2**-24. A saturated sigmoid's gradient (CBAM, scale 2.11) is 1.8e-39: TensorFlow gives 0."""

# Operations whose float32 result is exact (selection, sign, data movement, constants):
# perturbing them would model rounding that float32 does not do.
FRESH_TENSORS = frozenset(
    {
        "empty",
        "empty_like",
        "empty_strided",
        "full",
        "full_like",
        "new_empty",
        "new_empty_strided",
        "new_full",
        "new_ones",
        "new_zeros",
        "ones",
        "ones_like",
        "scalar_tensor",
        "zeros",
        "zeros_like",
    }
)
"""Operations that make a tensor from nothing but a shape and a constant: exact."""

_EXACT = FRESH_TENSORS | {
    "abs",
    "alias",
    "amax",
    "amin",
    "cat",
    "clone",
    "constant_pad_nd",
    "copy",
    "copy_",
    "detach",
    "expand",
    "fill",
    "fill_",
    "gather",
    "index",
    "index_select",
    "lift_fresh",
    "max",
    "max_pool2d",
    "min",
    "neg",
    "permute",
    "relu",
    "select",
    "slice",
    "squeeze",
    "stack",
    "t",
    "threshold_backward",
    "transpose",
    "unsqueeze",
    "view",
    "_unsafe_view",
    "where",
    "zero_",
    "_to_copy",
    "_reshape_alias",
    "reshape",
}


_POOL: list[torch.Tensor] = []


def _uniform_pool(count: int) -> torch.Tensor:
    """At least 2 * count numbers uniform in [-1, 1], drawn once per process (seeded)."""
    if not _POOL or _POOL[0].numel() < 2 * count:
        size = max(1 << 20, 2 * count)
        generator = torch.Generator().manual_seed(20190615)
        _POOL[:] = [2.0 * torch.rand(size, generator=generator, dtype=torch.float64) - 1.0]
    return _POOL[0]


def _returns_alias(func) -> bool:
    schema = func._schema
    return schema.is_mutable or any(r.alias_info is not None for r in schema.returns)


class Float32RoundingNoise(TorchDispatchMode):
    """Within this mode, float64 operations round at random as float32 would (see module
    docstring). Use it around a float64 forward and backward."""

    def __init__(self, seed: int, relative: float = EPS32):
        super().__init__()
        self.relative = relative
        self.generator = torch.Generator().manual_seed(seed)

    # -- the two noise models -----------------------------------------------------------
    def _uniform(self, shape, dtype):
        """Roundings in [-relative, relative]: a window of a shared pool of uniform numbers
        at a random offset (drawing fresh numbers for every element of every operation
        costs more than the operations themselves on large attention maps)."""
        count = int(np.prod(shape))
        pool = _uniform_pool(count)
        start = int(torch.randint(0, pool.numel() - count + 1, (), generator=self.generator))
        return (self.relative * pool[start : start + count]).reshape(shape).to(dtype)

    def _round(self, value):
        """One rounding of every element."""
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            return value
        return value * (1.0 + self._uniform(value.shape, value.dtype))

    def _chain(self, shape, dtype):
        """1 + D for the terms of a sequential sum laid out in ``shape`` (row-major)."""
        count = int(np.prod(shape))
        partial_sum_roundings = self._uniform((count,), dtype)
        after = torch.flip(torch.cumsum(torch.flip(partial_sum_roundings, (0,)), 0), (0,))
        product_roundings = self._uniform((count,), dtype)
        return (1.0 + after + product_roundings).reshape(shape)

    # -- reductions -----------------------------------------------------------------------
    def _sum(self, x, dim=None, keepdim=False, dtype=None):
        dims = list(range(x.dim())) if dim is None or len(dim) == 0 else [d % x.dim() for d in dim]
        chain_shape = [x.shape[d] if d in dims else 1 for d in range(x.dim())]
        return torch.sum(
            x * self._chain(chain_shape, x.dtype), dim=dims, keepdim=keepdim, dtype=dtype
        )

    def _matmul(self, func, a, b):
        return func(a * self._chain((a.shape[-1],), a.dtype), b)

    def _convolution(self, x, weight, bias, stride, padding, dilation, transposed, *rest):
        if transposed:
            return None
        noisy = weight * self._chain((1, *weight.shape[1:]), weight.dtype)
        return torch.ops.aten.convolution(
            x, noisy, bias, stride, padding, dilation, transposed, *rest
        )

    def _convolution_backward(
        self,
        grad_out,
        x,
        weight,
        bias_sizes,
        stride,
        padding,
        dilation,
        transposed,
        output_padding,
        groups,
        mask,
    ):
        if transposed:
            return None
        conv_backward = torch.ops.aten.convolution_backward
        args = (bias_sizes, stride, padding, dilation, transposed, output_padding, groups)
        by_position = grad_out * self._chain(
            (grad_out.shape[0], 1, *grad_out.shape[2:]), grad_out.dtype
        )
        by_output = weight * self._chain((weight.shape[0], 1, *weight.shape[2:]), weight.dtype)
        grad_input = conv_backward(grad_out, x, by_output, *args, [mask[0], False, False])[0]
        grad_weight = conv_backward(by_position, x, weight, *args, [False, mask[1], False])[1]
        grad_bias = torch.sum(by_position, dim=[0, 2, 3]) if mask[2] else None
        return grad_input, grad_weight, grad_bias

    # -- fused kernels, expanded ------------------------------------------------------------
    def _softmax(self, x, dim, half_to_float=False):
        shifted = self._round(x - torch.amax(x, dim=dim, keepdim=True))
        exp = self._round(torch.exp(shifted))
        return self._round(exp / self._sum(exp, [dim], keepdim=True))

    def _softmax_backward(self, grad, out, dim, input_dtype):
        row = self._sum(self._round(grad * out), [dim], keepdim=True)
        return self._round(self._round(grad - row) * out)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        handled = None
        if name == "sum" and args[0].is_floating_point():
            handled = self._sum(*args, **kwargs)
        elif name in ("bmm", "mm") and not kwargs:
            handled = self._matmul(func, *args)
        elif name == "convolution" and not kwargs:
            handled = self._convolution(*args)
        elif name == "convolution_backward" and not kwargs:
            handled = self._convolution_backward(*args)
        elif name == "_softmax":
            handled = self._softmax(*args, **kwargs)
        elif name == "_softmax_backward_data":
            handled = self._softmax_backward(*args, **kwargs)
        if handled is not None:
            return handled
        out = func(*args, **kwargs)
        if name in _EXACT or _returns_alias(func):
            return out
        return tree_map(self._round, out)


def noisy_reruns(rerun, unit: float = EPS32):
    """``seed -> rerun()`` under simulated rounding to ``unit``: the noisy truths the policy
    asks for (``parity.core.policy.judge``)."""

    def noisy(seed: int):
        with Float32RoundingNoise(seed=seed, relative=unit):
            return rerun()

    return noisy
