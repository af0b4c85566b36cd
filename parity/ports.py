"""A port under test: loaded from ``MODULE:FACTORY``, instantiated, and asked to hold weights.

``FACTORY(channels)`` returns a Keras layer, or a plain function from a Keras tensor to a
Keras tensor (the style of many published ports: ``Conv2D`` layers built inline, static H
and W read from ``x.shape``, ``gamma`` in a bare ``tf.Variable``). A function is traced into
a functional ``keras.Model`` once per input shape, which turns its inline layers into
weights that can be loaded. What cannot hold weights is named for what it is.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np

from parity.frameworks import (
    is_layer,
    keras_resolved_to_tf_keras,
    layer_classes,
    port_keras,
    variable_path,
    working_directory_on_path,
)


class PortLoadError(Exception):
    """The check cannot run: the port cannot be imported or built (exit status 2)."""


class PortError(AssertionError):
    """The port fails the check without a numerical comparison: it crashed, or it cannot
    hold the reference's weights (exit status 1). An AssertionError, so that Hypothesis
    shrinks the example it happened on. Each kind is a subclass carrying its data, so that
    the diagnosis and the command dispatch on the type, never on the message."""

    def __reduce__(self):
        # Rebuilt without calling __init__ (whose arguments are the fields, not the
        # message), so that copying or pickling keeps the type and its fields.
        return _restored, (type(self), self.args), self.__dict__


def _restored(cls, args):
    error = cls.__new__(cls)
    error.args = args
    return error


class PortCrashed(PortError):
    """The port raised on an input: a shape to find, unlike weights it cannot hold.
    ``input_shape``: the input it raised on, in the port's layout."""

    def __init__(self, message: str, input_shape: tuple[int, ...]):
        super().__init__(message)
        self.input_shape = tuple(int(n) for n in input_shape)


class OutputShapeMismatch(PortError):
    """The port ran, but a tensor it returned has another shape than the reference's.
    ``port_shape`` and ``reference_shape`` are both in the reference's layout."""

    def __init__(
        self,
        tensor: str,
        port_shape: tuple[int, ...],
        reference_shape: tuple[int, ...],
        data_format: str,
    ):
        self.tensor = tensor
        self.port_shape, self.reference_shape = tuple(port_shape), tuple(reference_shape)
        super().__init__(
            f"{tensor}: the port's shape {self.port_shape} (in the reference's NCHW layout, "
            f"read as {data_format}) differs from the reference's {self.reference_shape}"
        )


class MissingOutputs(PortError):
    """The port returned fewer tensors than the reference: ``missing`` names those it did
    not produce, ``produced`` those it did."""

    def __init__(self, missing: list[str], produced: list[str]):
        self.missing, self.produced = list(missing), list(produced)
        super().__init__(f"the port produced no {', '.join(missing)} (it has {produced})")


class WeightsNotHeld(PortError):
    """The port cannot hold the reference's weights: no input shape is involved, so there
    is no example to shrink and the message is the whole diagnosis."""


class WeightsCreatedPerCall(WeightsNotHeld):
    """The port creates new weights each time it is called (layers made in ``call()``):
    ``created`` describes them (``'q/kernel (1, 1, 16, 2)'``)."""

    def __init__(self, created: list[str]):
        self.created = list(created)
        shown = ", ".join(created[:2]) + (", ..." if len(created) > 2 else "")
        super().__init__(
            f"weights created anew on every call: the port makes {len(created)} new weights "
            f"each time it is called ({shown}), so two calls on the same input differ and no "
            "weights can be loaded into it. Create its layers in build() or __init__, not in "
            "call()."
        )


class UnmappedWeights(WeightsNotHeld):
    """The reference's parameters do not map onto the port's weights: ``missing`` are
    reference parameters with no counterpart, ``left_over`` port weights nothing holds."""

    def __init__(self, message: str, missing: list[str], left_over: list[str]):
        super().__init__(message)
        self.missing, self.left_over = list(missing), list(left_over)


class UntrackedParameter(WeightsNotHeld):
    """A parameter the port keeps in a variable Keras does not track (a bare
    ``tf.Variable``): ``untracked`` describes them, ``unmapped`` is the mapping's own
    refusal."""

    def __init__(self, untracked: list[str], unmapped: UnmappedWeights):
        self.untracked, self.unmapped = list(untracked), unmapped
        super().__init__(
            f"a parameter that is not a tracked weight: the port keeps "
            f"{', '.join(untracked)} in a variable Keras does not track (a bare "
            "tf.Variable), so it can be neither loaded nor trained; create it with "
            f"add_weight() in build(). ({unmapped})"
        )


class FrozenParameter(WeightsNotHeld):
    """A trainable parameter of the reference held in a non-trainable weight: ``frozen``
    pairs each parameter with the port weight that holds it."""

    def __init__(self, frozen: list[tuple[str, str]]):
        self.frozen = list(frozen)
        super().__init__(
            "a parameter that is not trained: the port holds "
            + ", ".join(f"{key} in {weight}" for key, weight in frozen)
            + " as a non-trainable weight, so training would never move it"
        )


class ModuleNotDetected(PortError):
    """No registered pair's parameters map onto the port's weights: ``weights`` describes
    the port's trainable weights, ``modules`` the pairs tried."""

    def __init__(self, weights: list[str], modules: list[str]):
        self.weights, self.modules = list(weights), list(modules)
        super().__init__(
            f"cannot tell which module the port implements: its weights ({', '.join(weights)}) "
            f"fit none of {', '.join(modules)}; name it: --port {modules[0]}=MODULE:FACTORY"
        )


_KERAS2_FUNCTION = "KerasTensor cannot be used as input to a TensorFlow function"
"""Keras 3's refusal of code written for Keras 2's functional API (TFOpLambda)."""

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_OP_DETAIL = re.compile(r"\}\}\s*(.*?)\s*\[Op:")


def describe_error(error: BaseException) -> str:
    """A one-line account of an exception raised inside a port, without Keras' and
    TensorFlow's wrapping (call arguments, op names, colour codes)."""
    text = _ANSI.sub("", str(error))
    detail = _OP_DETAIL.search(text)
    if detail:
        return detail.group(1)
    lines = [
        line.strip()
        for line in text.splitlines()
        if line.strip()
        and not line.startswith("Exception encountered when calling")
        and not line.strip().startswith(("Arguments received", "•"))
    ]
    return lines[0] if lines else type(error).__name__


def import_target(target: str, option: str = "--port", what: str = "FACTORY") -> Any:
    """``package.module:attribute`` -> the object, importing from the working directory."""
    module_name, sep, attribute = target.partition(":")
    if not sep or not module_name or not attribute:
        raise PortLoadError(f"{option} expects MODULE:{what}. Received: {target!r}")
    working_directory_on_path()
    try:
        with keras_resolved_to_tf_keras():
            module = importlib.import_module(module_name)
    except Exception as error:
        raise PortLoadError(
            f"cannot import module {module_name!r} for {option} {target}: "
            f"{type(error).__name__}: {error}"
        ) from error
    found = module
    for name in attribute.split("."):
        if not hasattr(found, name):
            raise PortLoadError(
                f"module {module_name!r} has no attribute {attribute!r} ({option} {target})"
            )
        found = getattr(found, name)
    return found


def load_factory(target: str) -> Callable:
    """The port factory named by ``--port MODULE:FACTORY``."""
    factory = import_target(target)
    if not callable(factory):
        raise PortLoadError(
            f"--port {target} names an object of type {type(factory).__name__}, not a callable "
            "factory(channels)"
        )
    return factory


@dataclass
class PortInstance:
    """A built port: what to call, its weights in the order created, what it leaves untracked."""

    layer: Any  # a keras Layer, or the keras.Model traced from a function
    weights: list  # keras Variables, creation order
    untracked: list[str] = field(default_factory=list)  # "name shape", bare variables
    from_function: bool = False
    names: dict = field(default_factory=dict)  # id(weight) -> name, where paths say too little
    built_for: tuple = ()  # the input shape it was built on

    def name_of(self, weight) -> str:
        """The weight's path inside the port by the author's attribute names ('q/kernel'),
        the same for every instance (not 'my_pam_3/conv2d_9/kernel')."""
        path = self.names.get(id(weight)) or variable_path(weight)
        return path.removeprefix(f"{self.layer.name}/")


@dataclass
class _Created:
    weights: list = field(default_factory=list)  # through Layer.add_weight, in order
    tf_variables: list = field(default_factory=list)  # every tf.Variable, bare ones too


@contextlib.contextmanager
def _recording():
    """Records the weights created inside it: every Keras weight (``Layer.add_weight``,
    whatever the backend), and on TensorFlow every ``tf.Variable``, bare ones included."""
    created = _Created()
    originals = {cls: cls.add_weight for cls in layer_classes()}

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


def instantiate(factory: Callable, channels: int, x: np.ndarray) -> PortInstance:
    """Build the port for ``channels`` on an input like ``x`` (in the port's layout)."""
    with _recording() as created:
        try:
            port = factory(channels)
        except Exception as error:
            raise PortLoadError(
                f"the factory raised on channels={channels}: {type(error).__name__}: "
                f"{describe_error(error)}"
            ) from error
        if is_layer(port):
            _call(port, x, "building")
            layer, from_function = port, False
        elif callable(port):
            # A concrete batch: ports reshape with sizes read from x.shape, the batch too.
            inputs = port_keras().Input(shape=x.shape[1:], batch_size=x.shape[0], dtype="float32")
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
                layer, from_function = port_keras().Model(inputs, outputs), True
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
    names = attribute_paths(layer)
    bare = [
        v for v in created.tf_variables if id(v) not in backing and getattr(v, "trainable", True)
    ]
    if from_function:
        bare += [
            v
            for v in _bare_variables_in(port)
            if id(v) not in backing and all(v is not b for b in bare)
        ]
    instance = PortInstance(
        layer, in_order, [_describe(v) for v in bare], from_function, names, tuple(x.shape)
    )
    _check_weights_persist(instance, x)
    return instance


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


def attribute_paths(layer) -> dict[int, str]:
    """id(weight) -> its path by the names the author wrote: ``q/kernel`` for ``self.q =
    Conv2D(...)``, ``alpha`` for ``self.alpha = self.add_weight(...)``. Layers reached by no
    attribute (a traced function's) go by their names, with Keras' generated numbers
    (``conv2d_7``) counted again from the start inside the port, so that the paths are the
    same for every instance and can be written in a weight map."""
    paths: dict[int, str] = {}
    visited: set[int] = set()

    def visit(value, path: str):
        if is_layer(value):
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


def _check_weights_persist(instance: PortInstance, x: np.ndarray) -> None:
    with _recording() as recorded:
        _call(instance.layer, x, "when called a second time")
    if recorded.weights:
        raise WeightsCreatedPerCall([_describe(v, last=2) for v in recorded.weights])
