"""A running error bound: how far a faithful float32 computation may land from the truth.

The float64 reference is run once more while every tensor carries, next to its value, the
variance ``V`` of the error that float32 arithmetic would give it, per element, in units of
eps32**2: a running error analysis (Wilkinson) in its probabilistic form (Higham and Mary,
"A new approach to probabilistic rounding error analysis", SIAM J. Sci. Comput. 2019):
roundings are independent, of size up to eps32 times their result, so errors add as
variances rather than as absolute values (a sum of n rounded terms errs like sqrt(n), not
n). The rules, to first order:

- a tensor that enters exact (the input, a weight, a cotangent: float32 values) has V = 0;
- data movement (views, permutes, copies, slices, selections) moves V with the values;
- an elementwise result adds its own rounding, ``y**2``, to its operands' V carried through
  its derivative: ``V(a * b) = (ab)**2 + b**2 V(a) + a**2 V(b)``; near zero a rounding errs
  by the dtype's underflow instead (``rounding.UNDERFLOW``: float32 results below 2**-126
  flushed to zero), so every rounded result's own term is ``y**2 + (underflow / eps)**2``,
  which changes nothing above the underflow and lets a flushed result carry its error
  through what follows;
  ``V(exp a) = exp(a)**2 (1 + V(a))``;
- a sum of products (a matrix product, a convolution and its gradients, a reduction)
  carries its operands' V through the other factor squared, ``V(a @ b) = a**2 @ V(b) +
  V(a) @ b**2 + own``, and adds the rounding of its partial sums (:func:`summation_variance`);
- composite kernels (softmax, log-softmax, batch norm, losses, and their gradients) run
  through PyTorch's own decompositions into those operations.

``sqrt(V)`` (:meth:`RunningErrorBound.deviation`) is large exactly where a tensor comes out
of cancellation: the gradient w.r.t. ``query_conv.bias`` is a sum over positions of terms
that cancel (softmax rows sum to one), and its float32 error follows the size of the terms,
not of the result. A float32 run of the reference errs there by the luck of its library's
summation order on that machine; the bound does not depend on luck. ``parity.core.policy``
takes a few deviations of each element as its floor. Errors that one rounding spreads over
many elements (a softmax row's normalisation, shared by the row) are correlated, which this
model does not see; ``parity.backends.torch.rounding``'s simulated rounding does, and the floor
takes both.

Operations without a rule raise :class:`NoErrorRule`.
"""

from __future__ import annotations

import math

import torch
from torch._decomp import decomposition_table
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map
from torch.utils.weak import WeakTensorKeyDictionary

from parity.backends.torch.rounding import FRESH_TENSORS, UNDERFLOW
from parity.core.errors import NoErrorRule
from parity.core.policy import UNIT_ROUNDOFF

aten = torch.ops.aten


# Operations that move or select values without rounding them: V moves the same way.
_MOVES = {
    "alias",
    "as_strided",
    "cat",
    "clone",
    "constant_pad_nd",
    "detach",
    "expand",
    "flip",
    "gather",
    "index",
    "index_select",
    "lift_fresh",
    "lift_fresh_copy",
    "permute",
    "repeat",
    "scatter",
    "select",
    "slice",
    "split",
    "split_with_sizes",
    "squeeze",
    "stack",
    "t",
    "transpose",
    "unbind",
    "unsqueeze",
    "view",
    "_unsafe_view",
    "_reshape_alias",
    "reshape",
    "narrow",
    "unfold",
    "contiguous",
}
# Results that carry no error: constants, fresh buffers, comparisons, indices.
_EXACT_NEW = FRESH_TENSORS | {
    "arange",
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "sign",
    "argmax",
    "argmin",
    "bernoulli",
    "rand",
    "rand_like",
    "randn",
    "randn_like",
    "randint",
    "normal",
    "uniform",
    "isnan",
    "isinf",
    "logical_not",
    "any",
    "all",
    "_local_scalar_dense",
    "sort",
}
# Selections whose result is one of the operands, element by element: V is selected alike.
_SELECTIONS = {"relu", "abs", "neg", "clamp", "clamp_min", "clamp_max", "maximum", "minimum"}


def _is_float(value) -> bool:
    return isinstance(value, torch.Tensor) and value.is_floating_point()


class RunningErrorBound(TorchDispatchMode):
    """Within this mode, float64 operations also compute the error variance V of each
    result (see module docstring); :meth:`deviation` reads it for a tensor made inside.
    ``precision``: the compute dtype whose underflow a rounding near zero carries."""

    def __init__(self, precision: str = "float32"):
        super().__init__()
        self._variances = WeakTensorKeyDictionary()
        self._underflow = (UNDERFLOW[precision] / UNIT_ROUNDOFF[precision]) ** 2

    def deviation(self, tensor: torch.Tensor) -> torch.Tensor:
        """The standard deviation of a float32 computation's error, per element, in units
        of eps32 (so the error is about ``eps32 * deviation``)."""
        return self.variance(tensor).sqrt()

    def variance(self, tensor: torch.Tensor) -> torch.Tensor:
        found = self._variances.get(tensor)
        if found is None:
            return torch.zeros(tensor.shape, dtype=torch.float64)
        return found.expand(tensor.shape) if found.shape != tensor.shape else found

    # -- helpers ----------------------------------------------------------------------------
    def _of(self, value):
        """V of an operand: 0 for a scalar or an exact tensor."""
        if _is_float(value):
            found = self._variances.get(value)
            return found if found is not None else torch.zeros_like(value)
        return 0.0

    def _carried(self, value):
        """V of an operand as a tensor of the operand's shape."""
        return self._of(value) + 0 * value

    def _set(self, out, variance):
        if _is_float(out) and variance is not None:
            if isinstance(variance, torch.Tensor) and variance.shape != out.shape:
                variance = variance.expand(out.shape)
            self._variances[out] = variance

    # -- the rules (V: the variance of a result's error, in units of eps32**2) -------------
    def _pointwise(self, name, args, kwargs, out):
        """V of an elementwise result from its operands' V, or None without a rule."""
        a = args[0]
        v = self._of
        y = out
        own = y * y + self._underflow  # the result's own rounding
        if name in ("add", "sub"):
            alpha = kwargs.get("alpha", args[2] if len(args) > 2 else 1)
            return own + v(a) + alpha * alpha * v(args[1])
        if name == "mul":
            b = args[1]
            return own + _sq(b) * v(a) + _sq(a) * v(b)
        if name == "div":
            b = args[1]
            return own + (v(a) + own * v(b)) / _sq(b)
        if name == "exp":
            return own * (1.0 + v(a))
        if name == "log":
            return own + v(a) / (a * a)
        if name == "sqrt":
            return own + v(a) / (4.0 * own)
        if name == "rsqrt":
            return own + own * v(a) / (4.0 * a * a)
        if name == "reciprocal":
            return own + own * own * v(a)
        if name == "pow" and not isinstance(args[1], torch.Tensor):
            p = float(args[1])
            return own + (p * a ** (p - 1)) ** 2 * v(a)
        if name == "sigmoid":
            return own + (y * (1.0 - y)) ** 2 * v(a)
        if name == "tanh":
            return own + (1.0 - own) ** 2 * v(a)
        if name in ("addcmul", "addcdiv"):
            value = kwargs.get("value", args[3] if len(args) > 3 else 1)
            s, b, c = args[0], args[1], args[2]
            if name == "addcmul":
                term = _sq(c) * v(b) + _sq(b) * v(c) + _sq(b * c)
            else:
                q = _sq(b / c)
                term = (v(b) + q * v(c)) / _sq(c) + q
            return own + v(s) + value * value * term
        if name == "lerp":
            end, weight = args[1], args[2]
            w = _sq(weight)
            return own + _sq(1 - weight) * v(a) + w * v(end) + w * _sq(end - a)
        if name == "where":
            return torch.where(args[0], v(args[1]), v(args[2]))
        if name == "threshold_backward":
            return torch.where(args[1] > args[2], v(a), 0.0)
        if name in _SELECTIONS:
            if len(args) > 1 and _is_float(args[1]):  # maximum, minimum
                return torch.where(out == a, v(a), v(args[1]))
            return v(a) + 0 * y
        if name in ("_to_copy", "to"):
            return v(a) + (own if out.dtype != a.dtype else 0.0)
        return None

    def _reduction(self, name, args, kwargs, out):
        a = args[0]
        if name in ("sum", "mean"):
            dims = args[1] if len(args) > 1 else kwargs.get("dim")
            keepdim = args[2] if len(args) > 2 else kwargs.get("keepdim", False)
            dims = list(range(a.dim())) if dims is None or len(dims) == 0 else dims
            carried = self._carried(a)
            variance = carried.sum(dim=dims, keepdim=keepdim)
            length = max(a.numel(), 1) // max(out.numel(), 1)
            squares = (a * a).sum(dim=dims, keepdim=keepdim)
            variance = variance + summation_variance(squares, length) + self._underflow
            if name == "mean":
                n = max(a.numel(), 1) / max(out.numel(), 1)
                variance = variance / (n * n) + out * out + self._underflow
            return variance.to(out.dtype)
        if name in ("amax", "amin"):
            dims = args[1] if len(args) > 1 else kwargs.get("dim", [])
            keepdim = args[2] if len(args) > 2 else kwargs.get("keepdim", False)
            dims = list(range(a.dim())) if len(dims) == 0 else dims
            return torch.amax(self._carried(a), dim=dims, keepdim=keepdim)
        return None

    def _products(self, func, args, kwargs, positions, length, adjust=lambda a: a, feeds=None):
        """For f a sum of ``length`` products, linear in each operand at ``positions``: the
        operands' V carried through the other operands squared, plus the sum's own
        rounding (:func:`summation_variance`). ``feeds`` says which results each operand
        enters (all of them by default)."""
        with torch.no_grad():
            squares = list(args)
            for i in positions:
                squares[i] = args[i] * args[i]
            total = [
                None if t is None else summation_variance(t, n) + self._underflow
                for t, n in zip(_leaves(func(*adjust(squares), **kwargs)), length, strict=True)
            ]
            for i in positions:
                if self._variances.get(args[i]) is None:  # exact: nothing to carry
                    continue
                carried = list(squares)
                carried[i] = self._carried(args[i])
                for k, part in enumerate(_leaves(func(*adjust(carried), **kwargs))):
                    if part is not None and (feeds is None or k in feeds[i]):
                        total[k] = total[k] + part
        return total

    def _linear_algebra(self, func, name, args, kwargs):
        if name in ("mm", "bmm"):
            return self._products(func, args, kwargs, (0, 1), [args[0].shape[-1]])[0]
        if name == "convolution":
            bias = args[2]
            no_bias = lambda a: [a[0], a[1], None, *a[3:]]  # noqa: E731
            weight = args[1]
            length = [weight[0].numel()]
            variance = self._products(func, args, kwargs, (0, 1), length, no_bias)[0]
            if bias is not None:
                shape = (1, -1, *[1] * (variance.dim() - 2))
                variance = variance + (self._of(bias) + bias * bias).view(shape)
            return variance
        if name == "convolution_backward":
            mask = args[-1]
            # grad_input = f(g, w), grad_weight = f(g, x): x and w each feed one of them.
            feeds = {0: (0, 1), 1: (1,), 2: (0,)}
            g, weight = args[0], args[2]
            length = [
                g.shape[1] * weight[0, 0].numel(),  # grad_input: output channels x kernel
                g.shape[0] * g[0, 0].numel(),  # grad_weight: batch x output positions
                1,
            ]
            variances = self._products(func, args, kwargs, (0, 1, 2), length, feeds=feeds)
            results = [var if wanted else None for var, wanted in zip(variances, mask, strict=True)]
            if mask[2]:
                g = args[0]
                dims = [0, *range(2, g.dim())]
                carried = (self._carried(g)).sum(dim=dims)
                squares = (g * g).sum(dim=dims)
                results[2] = carried + summation_variance(squares, g.numel() // g.shape[1])
            return tuple(results)
        if name in ("addmm", "baddbmm"):
            bias = args[0]
            op = aten.mm if name == "addmm" else aten.bmm
            beta = kwargs.get("beta", 1)
            alpha = kwargs.get("alpha", 1)
            products = self._products(op, args[1:], {}, (0, 1), [args[1].shape[-1]])[0]
            return alpha * alpha * products + beta * beta * (self._of(bias) + bias * bias)
        return None

    # -- dispatch ---------------------------------------------------------------------------
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        inplace = name.endswith("_") and not name.startswith("_")
        base = name[:-1] if inplace else name
        if base == "copy":  # copy_(self, src): self takes src's values and V
            out = func(*args, **kwargs)
            self._set(out, self._of(args[1]) + 0 * out)
            return out
        flat, _ = tree_flatten((args, kwargs))
        if not any(_is_float(v) for v in flat) and base not in _EXACT_NEW:
            return func(*args, **kwargs)
        if base in _EXACT_NEW:
            return func(*args, **kwargs)
        if base in _MOVES or _is_view(func):
            out = func(*args, **kwargs)
            moved = func(
                *tree_map(lambda v: self._carried(v) if _is_float(v) else v, args), **kwargs
            )
            for o, mo in zip(_leaves(out), _leaves(moved), strict=True):
                self._set(o, mo)
            return out
        if base in ("mm", "bmm", "convolution", "convolution_backward", "addmm", "baddbmm"):
            out = func(*args, **kwargs)
            variance = self._linear_algebra(func, base, args, kwargs)
            if isinstance(out, tuple):
                for o, vo in zip(out, variance, strict=True):
                    self._set(o, vo)
            else:
                self._set(out, variance)
            return out
        if base in ("max", "min") and len(args) > 1 and isinstance(args[1], int):
            values, indices = func(*args, **kwargs)  # max.dim: values and where they are
            dim = args[1]
            keepdim = args[2] if len(args) > 2 else kwargs.get("keepdim", False)
            idx = indices if keepdim else indices.unsqueeze(dim)
            picked = torch.gather(self._carried(args[0]), dim, idx)
            self._set(values, picked if keepdim else picked.squeeze(dim))
            return values, indices
        if base in ("sum", "mean", "amax", "amin"):
            out = func(*args, **kwargs)
            self._set(out, self._reduction(base, args, kwargs, out))
            return out
        operands = args
        if inplace:  # the rule reads the operands before the update
            saved = args[0].clone()
            saved_variance = self._of(args[0]).clone()
            out = func(*args, **kwargs)
            self._variances[saved] = saved_variance
            operands = (saved, *args[1:])
        else:
            out = func(*args, **kwargs)
        if _is_float(out):
            variance = self._pointwise(base, operands, kwargs, out)
            if variance is not None:
                self._set(out, variance)
                return out
        decomposition = decomposition_table.get(func)
        with self:
            if decomposition is not None:
                result = decomposition(*args, **kwargs)
            else:  # a composite operation: its own implementation, in simpler operations
                result = func.decompose(*args, **kwargs)
        if result is NotImplemented:
            raise NoErrorRule(str(func))
        # The decomposition computed the same values in float64, up to rounding: keep the
        # kernel's values, take the decomposition's variances.
        for o, r in zip(_leaves(out), _leaves(result), strict=True):
            if _is_float(r):
                self._set(o, self.variance(r))
        return out


SEQUENTIAL_RUN = 256
"""The summation order assumed for a reduction: runs of up to 256 terms added one after
another (a GEMM kernel's depth block, a vector lane's share of a reduction), the runs then
added pairwise. Measured libraries sum in such blocks; a fully sequential order over
thousands of terms would bound what no library does."""


def summation_variance(squares: torch.Tensor, length: int) -> torch.Tensor:
    """The rounding variance of summing ``length`` terms whose squares sum to ``squares``
    (in units of eps32**2), under random rounding: each of a run's partial sums is rounded,
    a partial sum of k terms of random sign having about k mean squares, so a run of r terms
    contributes r/2 times its sum of squares, and each pairwise level once more."""
    run = min(length, SEQUENTIAL_RUN)
    levels = math.ceil(math.log2(max(length / SEQUENTIAL_RUN, 1.0)))
    return squares * (run / 2.0 + levels + 1.0)


def _sq(value):
    return value * value


def _is_view(func) -> bool:
    schema = func._schema
    return not schema.is_mutable and any(
        r.alias_info is not None and not r.alias_info.is_write for r in schema.returns
    )


def _leaves(value) -> list:
    return tree_flatten(value)[0]
