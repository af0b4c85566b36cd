"""Weight and activation layouts between PyTorch and Keras, converted strictly.

PyTorch stores convolution kernels as OIHW and activations as NCHW; Keras stores kernels as
HWIO whatever the data format, and activations as NHWC (``channels_last``) or NCHW
(``channels_first``). Every conversion here is an explicit transpose followed by an exact
shape check: nothing is ever reshaped to make shapes fit, because a reshape that fits can
silently scramble a wrong layout.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np


def variable_path(variable) -> str:
    """Keras 3's path ('pam/query_conv/kernel'), or a tf.Variable's name without ':0'."""
    path = getattr(variable, "path", None)
    return path if isinstance(path, str) else variable.name.removesuffix(":0")


@dataclass(frozen=True)
class Layout:
    """How one parameter is laid out on each side, and the permutation between them."""

    name: str
    torch_layout: str
    keras_layout: str
    to_keras_axes: tuple[int, ...] | None = None  # None: same array on both sides

    def keras_shape(self, torch_shape: tuple[int, ...]) -> tuple[int, ...]:
        if self.to_keras_axes is None:
            return tuple(torch_shape)
        return tuple(torch_shape[axis] for axis in self.to_keras_axes)

    def torch_shape(self, keras_shape: tuple[int, ...]) -> tuple[int, ...]:
        if self.to_keras_axes is None:
            return tuple(keras_shape)
        return tuple(keras_shape[axis] for axis in np.argsort(self.to_keras_axes))

    def to_keras(self, array: np.ndarray) -> np.ndarray:
        if self.to_keras_axes is None:
            return np.asarray(array)
        return np.transpose(array, self.to_keras_axes)

    def to_torch(self, array: np.ndarray) -> np.ndarray:
        if self.to_keras_axes is None:
            return np.asarray(array)
        return np.transpose(array, np.argsort(self.to_keras_axes))

    def describe(self) -> str:
        return f"PyTorch {self.torch_layout} -> Keras {self.keras_layout}"


CONV_KERNEL = Layout(
    "conv kernel", "OIHW (out, in, kH, kW)", "HWIO (kH, kW, in, out)", (2, 3, 1, 0)
)
VECTOR = Layout("vector", "(n,)", "(n,)")


@dataclass(frozen=True)
class OneElement(Layout):
    """A one-element PyTorch parameter (``gamma``, shape (1,)) held in a one-element Keras
    shape (``keras``: a scalar by default)."""

    keras: tuple[int, ...] = ()

    def keras_shape(self, torch_shape):
        if int(np.prod(torch_shape)) != 1:
            return None  # no one-element weight fits: reported as a mismatch
        return self.keras

    def torch_shape(self, keras_shape):
        return (1,)

    def to_keras(self, array):
        return np.asarray(array).reshape(self.keras)

    def to_torch(self, array):
        return np.asarray(array).reshape((1,))


SCALAR = OneElement("scalar", "(1,)", "()")


@dataclass(frozen=True)
class _PointwiseKernel(Layout):
    """A 1x1 convolution held as a Dense kernel, OIHW (O, I, 1, 1) <-> (I, O), or, with
    ``lead`` 1, as a kernel-size-1 Conv1D over the flattened positions, (1, I, O)."""

    lead: int = 0

    def keras_shape(self, torch_shape):
        o, i, kh, kw = torch_shape
        return (1,) * self.lead + (i, o) if (kh, kw) == (1, 1) else None

    def torch_shape(self, keras_shape):
        i, o = keras_shape[self.lead :]
        return (o, i, 1, 1)

    def to_keras(self, array):
        return np.asarray(array)[:, :, 0, 0].T.reshape(self.keras_shape(np.shape(array)))

    def to_torch(self, array):
        kernel = np.asarray(array).reshape(np.shape(array)[self.lead :])
        return kernel.T[:, :, None, None]


DENSE_KERNEL = _PointwiseKernel("dense kernel", "OIHW (out, in, 1, 1)", "(in, out)")
CONV1D_KERNEL = _PointwiseKernel(
    "conv1d kernel", "OIHW (out, in, 1, 1)", "(1, in, out): Conv1D over positions", lead=1
)
LINEAR = Layout("linear", "(out, in)", "(in, out)", (1, 0))


def infer_layout(torch_shape: tuple[int, ...], keras_shape: tuple[int, ...]) -> Layout | None:
    """The layout that carries ``torch_shape`` onto ``keras_shape`` exactly, if any."""
    torch_shape, keras_shape = tuple(torch_shape), tuple(keras_shape)
    if int(np.prod(torch_shape)) == 1 and int(np.prod(keras_shape)) == 1 and len(torch_shape) <= 1:
        return OneElement("one element", "(1,)", str(keras_shape), keras=keras_shape)
    if len(torch_shape) == 1 and torch_shape == keras_shape:
        return VECTOR
    if len(torch_shape) == 2 and torch_shape[::-1] == keras_shape:
        return LINEAR
    if len(torch_shape) == 4 and CONV_KERNEL.keras_shape(torch_shape) == keras_shape:
        return CONV_KERNEL
    for pointwise in (DENSE_KERNEL, CONV1D_KERNEL):
        if len(torch_shape) == 4 and pointwise.keras_shape(torch_shape) == keras_shape:
            return pointwise
    return None


@dataclass(frozen=True)
class Sliced(Layout):
    """A parameter held in a slice of a fused weight's last axis: one convolution computing
    query, key and value at once, split afterwards (``qkv/kernel[0:4]``). ``base`` lays the
    parameter out as the slice holds it; ``full`` is the fused weight's shape."""

    base: Layout = VECTOR
    start: int = 0
    stop: int = 0
    full: tuple[int, ...] = ()

    def keras_shape(self, torch_shape):
        inside = self.base.keras_shape(torch_shape)
        if inside is None or tuple(inside) != (*self.full[:-1], self.stop - self.start):
            return None
        return self.full

    def torch_shape(self, keras_shape):
        return self.base.torch_shape((*keras_shape[:-1], self.stop - self.start))

    def to_keras(self, array):
        """The slice's content (``into`` writes it into the fused weight)."""
        return self.base.to_keras(array)

    def into(self, fused: np.ndarray, array: np.ndarray) -> np.ndarray:
        written = np.array(fused, copy=True)
        written[..., self.start : self.stop] = self.base.to_keras(array)
        return written

    def to_torch(self, array):
        return self.base.to_torch(np.asarray(array)[..., self.start : self.stop])

    def describe(self) -> str:
        return f"{self.base.describe()}, in [..., {self.start}:{self.stop}] of a fused weight"


def sliced_layout(torch_shape, fused_shape, start: int, stop: int) -> Sliced | None:
    """The layout of a parameter held in ``[..., start:stop]`` of a weight of
    ``fused_shape``, if its shape fits there."""
    if not 0 <= start < stop <= fused_shape[-1]:
        return None
    base = infer_layout(torch_shape, (*fused_shape[:-1], stop - start))
    if base is None:
        return None
    return Sliced(
        base.name, base.torch_layout, base.keras_layout, None, base, start, stop, fused_shape
    )


@dataclass(frozen=True)
class Binding:
    """One reference parameter bound to one weight of the port (a Keras variable) through a
    layout."""

    torch_key: str
    variable: Any  # the port framework's variable (keras.Variable)
    layout: Layout

    @property
    def port_shape(self) -> tuple[int, ...]:
        return tuple(self.variable.shape)

    @property
    def port_path(self) -> str:
        return variable_path(self.variable)


# ---------------------------------------------------------------------------------------
# Which Keras variable holds which reference parameter, per layer class.

_BINDERS: dict[type, Callable[[Any], list[Binding]]] = {}


def register_bindings(layer_class: type):
    """Register ``binder(layer) -> list[Binding]`` for a layer class and its subclasses."""

    def decorator(binder):
        _BINDERS[layer_class] = binder
        return binder

    return decorator


def conv_bindings(prefix: str, conv, *, bias: bool = True) -> list[Binding]:
    """A Keras Conv2D bound to PyTorch's ``{prefix}.weight`` and ``{prefix}.bias``."""
    bindings = [Binding(f"{prefix}.weight", conv.kernel, CONV_KERNEL)]
    if bias:
        bindings.append(Binding(f"{prefix}.bias", conv.bias, VECTOR))
    return bindings


def bindings_for(layer) -> list[Binding]:
    """The bindings of a built layer whose class (or a base class) is registered. The
    bundled layers' binders come with their pairs (``parity/pairs/``), loaded on first
    use, so that importing this module imports no framework and no port."""
    if not any(cls in _BINDERS for cls in type(layer).__mro__):
        from parity.core import registry

        registry.pairs()  # each pair registers its bundled layer's binder
    for cls in type(layer).__mro__:
        if cls in _BINDERS:
            if not layer.built:
                raise ValueError(
                    f"Layer {layer.name!r} is not built, so it has no weights to convert "
                    "yet. Call it once on an input, or call layer.build(input_shape), first."
                )
            return _BINDERS[cls](layer)
    raise TypeError(
        f"No weight bindings are registered for {type(layer).__name__}; known layers: "
        f"{sorted(c.__name__ for c in _BINDERS)}. Pass bindings=... explicitly."
    )


def batch_norm_bindings(prefix: str, norm) -> list[Binding]:
    """A Keras BatchNormalization bound to PyTorch's BatchNorm2d ``{prefix}.*`` (its
    ``num_batches_tracked`` has no Keras counterpart and is ignored on purpose)."""
    return [
        Binding(f"{prefix}.weight", norm.gamma, VECTOR),
        Binding(f"{prefix}.bias", norm.beta, VECTOR),
        Binding(f"{prefix}.running_mean", norm.moving_mean, VECTOR),
        Binding(f"{prefix}.running_var", norm.moving_variance, VECTOR),
    ]


def prefixed(prefix: str, bindings: list[Binding]) -> list[Binding]:
    return [replace(b, torch_key=prefix + b.torch_key) for b in bindings]


# ---------------------------------------------------------------------------------------
# State dicts in and out.


def to_numpy(value) -> np.ndarray:
    """A torch tensor (any device, any grad state) or array-like as a NumPy array."""
    if hasattr(value, "detach"):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def state_dict_arrays(source) -> dict[str, np.ndarray]:
    """A torch module or a mapping of tensors/arrays as ``{key: ndarray}``."""
    if hasattr(source, "state_dict"):
        source = source.state_dict()
    if not isinstance(source, Mapping):
        raise TypeError(
            "Expected a torch.nn.Module or a mapping of parameter names to tensors. "
            f"Received: {type(source).__name__}"
        )
    return {key: to_numpy(value) for key, value in source.items()}


# ---------------------------------------------------------------------------------------
# Activations.


def nchw_to_nhwc(array: np.ndarray) -> np.ndarray:
    return np.transpose(array, (0, 2, 3, 1))


def nhwc_to_nchw(array: np.ndarray) -> np.ndarray:
    return np.transpose(array, (0, 3, 1, 2))


def to_data_format(nchw: np.ndarray, data_format: str) -> np.ndarray:
    """A reference-layout (NCHW) activation as the port's data format expects it."""
    return nchw_to_nhwc(nchw) if data_format == "channels_last" else np.asarray(nchw)


def from_data_format(array: np.ndarray, data_format: str) -> np.ndarray:
    """A port activation back in the reference layout (NCHW)."""
    return nhwc_to_nchw(array) if data_format == "channels_last" else np.asarray(array)
