"""Building a Keras port: the factory called, a function traced into a functional model,
every weight it creates recorded, and its weights named by the author's attribute paths.

A function is traced into a functional ``keras.Model`` once per input shape, which turns its
inline layers into weights that can be loaded. On TensorFlow every ``tf.Variable`` created is
recorded too, so that a bare one (a ``gamma`` Keras does not track) can be named.
"""

from __future__ import annotations

import contextlib
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType

import keras
import numpy as np

from parity.backends.ports import describe_error
from parity.backends.protocol import PortInstance
from parity.core.errors import PortCrashed, PortLoadError, WeightsCreatedPerCall
from parity.core.layout import variable_path

_KERAS2_FUNCTION = "KerasTensor cannot be used as input to a TensorFlow function"
"""Keras 3's refusal of code written for Keras 2's functional API (TFOpLambda)."""


@dataclass
class _Created:
    weights: list = field(default_factory=list)  # through Layer.add_weight, in order
    tf_variables: list = field(default_factory=list)  # every tf.Variable, bare ones too


@contextlib.contextmanager
def _recording(layers: tuple[type, ...]):
    """Records the weights created inside it: every Keras weight (``Layer.add_weight`` of
    each class in ``layers``, whatever the backend), and on TensorFlow every
    ``tf.Variable``, bare ones included."""
    created = _Created()
    originals = {cls: cls.add_weight for cls in layers}

    def recording(original):
        def add_weight(self, *args, **kwargs):
            variable = original(self, *args, **kwargs)
            created.weights.append(variable)
            return variable

        return add_weight

    for cls, original in originals.items():
        cls.add_weight = recording(original)
    try:
        with _tensorflow_variables(created.tf_variables):
            yield created
    finally:
        for cls, original in originals.items():
            cls.add_weight = original


def _tensorflow_variables(into: list):
    if keras.backend.backend() != "tensorflow":
        return contextlib.nullcontext()
    import tensorflow as tf

    def record(next_creator, **kwargs):
        variable = next_creator(**kwargs)
        into.append(variable)
        return variable

    return tf.variable_creator_scope(record)


def _backing(variable):
    """The TensorFlow variable behind a Keras variable (itself for a tf.Variable)."""
    return getattr(variable, "_value", variable)


def _bare_variables_in(function) -> list:
    """tf.Variables a function reaches through its closure or globals (not Keras weights)."""
    try:
        import tensorflow as tf
    except ImportError:  # pragma: no cover -- other backends
        return []
    try:
        found = inspect.getclosurevars(function)
    except (TypeError, ValueError):
        return []
    values = [*found.nonlocals.values(), *found.globals.values()]
    return [v for v in values if isinstance(v, tf.Variable)]


def _describe(variable, last: int | None = None) -> str:
    """'gamma (1,)'; with ``last``, only that many trailing parts of the path."""
    name = variable_path(variable)
    if last:
        name = "/".join(name.split("/")[-last:])
    return f"{name} {tuple(variable.shape)}"


def _is_torch_module(value) -> bool:
    """A ``torch.nn.Module``, told by its classes' modules (PyTorch is not imported here)."""
    return any(
        cls.__module__.startswith("torch.nn") and cls.__name__ == "Module"
        for cls in type(value).__mro__
    )


def build(
    factory: Callable, channels: int, x: np.ndarray, api: ModuleType, layers: tuple[type, ...]
) -> PortInstance:
    """Build the port for ``channels`` on an input like ``x`` (in the port's layout).
    ``api``: the Keras the port is written against (its ``Input`` and ``Model`` trace a
    function); ``layers``: the layer classes a port's layers may derive from."""
    with _recording(layers) as created:
        try:
            port = factory(channels)
        except Exception as error:
            raise PortLoadError(
                f"the factory raised on channels={channels}: {type(error).__name__}: "
                f"{describe_error(error)}"
            ) from error
        if isinstance(port, layers):
            _call(port, x, "building")
            layer, from_function = port, False
        elif _is_torch_module(port):  # after the layers: on Keras' torch backend they are too
            raise PortLoadError(
                f"the factory returned a PyTorch module ({type(port).__name__}, a "
                "torch.nn.Module): --port names the Keras port's factory; the reference is "
                "the module's own"
            )
        elif callable(port):
            # A concrete batch: ports reshape with sizes read from x.shape, the batch too.
            inputs = api.Input(shape=x.shape[1:], batch_size=x.shape[0], dtype="float32")
            try:
                outputs = port(inputs)
            except Exception as error:
                if _KERAS2_FUNCTION in str(error):
                    raise PortLoadError(
                        "the port function applies TensorFlow ops to Keras tensors, which "
                        "only Keras 2 allows: check it with --keras 2"
                    ) from error
                raise PortCrashed(
                    f"the port function failed on a symbolic Keras input of shape "
                    f"{tuple(x.shape)}: {type(error).__name__}: {describe_error(error)}",
                    input_shape=x.shape,
                ) from error
            try:
                layer, from_function = api.Model(inputs, outputs), True
            except (ValueError, TypeError) as error:  # e.g. it returned None or a NumPy array
                raise PortLoadError(
                    "the factory's function does not map a Keras tensor to a Keras tensor (it "
                    f"returned a {type(outputs).__name__}): {describe_error(error)}"
                ) from error
        else:
            raise PortLoadError(
                f"the factory returned a {type(port).__name__}; expected a keras.layers.Layer "
                "or a function from a Keras tensor to a Keras tensor"
            )
    tracked = {id(w) for w in layer.weights}
    in_order = [w for w in created.weights if id(w) in tracked]
    in_order += [w for w in layer.weights if all(w is not seen for seen in in_order)]
    backing = {id(_backing(w)) for w in layer.weights}
    names = attribute_paths(layer, layers)
    bare = [v for v in created.tf_variables if id(v) not in backing and _a_parameter(v)]
    if from_function:
        bare += [
            v
            for v in _bare_variables_in(port)
            if id(v) not in backing and all(v is not b for b in bare)
        ]
    created_at = {id(v): i for i, v in enumerate(created.tf_variables)}
    bare.sort(key=lambda v: created_at.get(id(v), len(created_at)))
    instance = PortInstance(
        layer, in_order, [_describe(v) for v in bare], from_function, names, tuple(x.shape), bare
    )
    instance.with_bare = sorted(
        [*in_order, *bare], key=lambda v: created_at.get(id(_backing(v)), len(created_at))
    )
    _check_weights_persist(instance, x, layers)
    return instance


def _a_parameter(variable) -> bool:
    """A bare variable that can hold a parameter: trainable and floating (tf.keras 2's
    models keep int64 step counters of their own in bare trainable variables)."""
    dtype = getattr(variable, "dtype", None)
    return getattr(variable, "trainable", True) and bool(getattr(dtype, "is_floating", True))


def _snake_case(name: str) -> str:
    """Keras' default layer name for a class: Conv2D -> conv2d, BatchNormalization ->
    batch_normalization."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def _own_weights(layer) -> list:
    """The weights a layer created itself, not those of its sub-layers."""
    for trainable, frozen in (
        ("_trainable_variables", "_non_trainable_variables"),  # Keras 3
        ("_trainable_weights", "_non_trainable_weights"),  # tf.keras 2
    ):
        if hasattr(layer, trainable):
            return [*getattr(layer, trainable), *getattr(layer, frozen, [])]
    return []


def _short_name(variable) -> str:
    return variable_path(variable).split("/")[-1]


def attribute_paths(layer, layers: tuple[type, ...]) -> dict[int, str]:
    """id(weight) -> its path by the names the author wrote: ``q/kernel`` for ``self.q =
    Conv2D(...)``, ``alpha`` for ``self.alpha = self.add_weight(...)``. Layers reached by no
    attribute (a traced function's) go by their names, with Keras' generated numbers
    (``conv2d_7``) counted again from the start inside the port, so that the paths are the
    same for every instance and can be written in a weight map."""
    paths: dict[int, str] = {}
    visited: set[int] = set()

    def visit(value, path: str):
        if isinstance(value, layers):
            walk(value, path)
        elif hasattr(value, "assign") and hasattr(value, "shape"):
            paths.setdefault(id(value), path)
        elif isinstance(value, (list, tuple)):
            for index, item in enumerate(value):
                visit(item, f"{path}/{index}")
        elif isinstance(value, dict):
            for key, item in value.items():
                visit(item, f"{path}/{key}")

    def walk(sub, prefix: str):
        if id(sub) in visited:
            return
        visited.add(id(sub))
        join = f"{prefix}/" if prefix else ""
        for name, value in list(vars(sub).items()):
            if not name.startswith("_"):
                visit(value, join + name)
        for weight in _own_weights(sub):
            paths.setdefault(id(weight), join + _short_name(weight))
        counts: dict[str, int] = {}
        for child in sub._flatten_layers(include_self=False, recursive=False):
            base = _snake_case(type(child).__name__)
            name = child.name
            if re.fullmatch(rf"{re.escape(base)}(_\d+)?", name):
                counts[base] = counts.get(base, -1) + 1
                name = base if counts[base] == 0 else f"{base}_{counts[base]}"
            walk(child, join + name)

    walk(layer, "")
    return paths


def _call(layer, x, what):
    try:
        return layer(x)
    except Exception as error:
        when = f" {what}" if what else ""
        raise PortCrashed(
            f"the port raised {type(error).__name__}{when} on input of shape {x.shape}: "
            f"{describe_error(error)}",
            input_shape=x.shape,
        ) from error


def _check_weights_persist(instance: PortInstance, x: np.ndarray, layers: tuple[type, ...]) -> None:
    with _recording(layers) as recorded:
        _call(instance.layer, x, "when called a second time")
    if recorded.weights:
        raise WeightsCreatedPerCall([_describe(v, last=2) for v in recorded.weights])
