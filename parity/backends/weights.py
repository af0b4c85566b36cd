"""A reference's state_dict into a port's weights and back, through the layouts of
``parity.core.layout``: the port's framework assigns the values.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from fnmatch import fnmatchcase

import numpy as np

from parity.backends.protocol import port_framework
from parity.core.errors import StateDictMismatchError
from parity.core.layout import Binding, Sliced, bindings_for, state_dict_arrays, to_numpy


def _check_shapes(bindings: Iterable[Binding], arrays: Mapping[str, np.ndarray], prefix: str):
    problems = []
    for binding in bindings:
        key = prefix + binding.torch_key
        torch_shape = tuple(arrays[key].shape)
        expected = binding.layout.keras_shape(torch_shape)
        if expected != binding.port_shape:
            problems.append(
                f"{key!r}: shape {torch_shape} does not fit Keras weight "
                f"{binding.port_path!r} of shape {binding.port_shape}: expected "
                f"{binding.layout.torch_shape(binding.port_shape)} "
                f"(layout {binding.layout.describe()})"
            )
    return problems


def load_state_dict(
    layer,
    source,
    *,
    prefix: str = "",
    bindings: list[Binding] | None = None,
    ignore: Iterable[str] = (),
) -> list[Binding]:
    """Copy a PyTorch state_dict (or module) into a built Keras layer's weights.

    Strict: every bound key must be present with the shape its layout implies, and every key
    under ``prefix`` must be bound (except those matching a pattern in ``ignore``, e.g.
    ``*num_batches_tracked``; patterns apply to the key without the prefix); otherwise
    nothing is written and a StateDictMismatchError lists every problem. Returns the
    bindings used.
    """
    bindings = bindings_for(layer) if bindings is None else bindings
    arrays = state_dict_arrays(source)
    expected = {prefix + b.torch_key for b in bindings}
    present = {
        key
        for key in arrays
        if key.startswith(prefix)
        and not any(fnmatchcase(key[len(prefix) :], pattern) for pattern in ignore)
    }
    problems = [
        f"missing key {key!r} (Keras weight {b.port_path!r}, shape {b.port_shape})"
        for b in bindings
        if (key := prefix + b.torch_key) not in arrays
    ]
    problems += [
        f"unexpected key {key!r} of shape {tuple(arrays[key].shape)}"
        for key in sorted(present - expected)
    ]
    if not problems:
        problems = _check_shapes(bindings, arrays, prefix)
    if problems:
        raise StateDictMismatchError(
            f"state_dict does not fit layer {layer.name!r} ({type(layer).__name__}): "
            + "; ".join(problems)
        )
    framework = port_framework()
    fused: dict[int, tuple] = {}  # id(variable) -> (variable, its value with slices written)
    for binding in bindings:
        array = arrays[prefix + binding.torch_key]
        if isinstance(binding.layout, Sliced):
            variable, value = fused.get(
                id(binding.variable), (binding.variable, framework.to_numpy(binding.variable))
            )
            fused[id(variable)] = (variable, binding.layout.into(value, array))
        else:
            framework.assign(binding.variable, binding.layout.to_keras(array))
    for variable, value in fused.values():
        framework.assign(variable, value)
    return bindings


def export_state_dict(
    layer, *, prefix: str = "", bindings: list[Binding] | None = None
) -> dict[str, np.ndarray]:
    """A Keras layer's weights as a PyTorch-layout state_dict of NumPy arrays."""
    bindings = bindings_for(layer) if bindings is None else bindings
    return {prefix + b.torch_key: b.layout.to_torch(to_numpy(b.variable.numpy())) for b in bindings}
