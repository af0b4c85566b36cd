"""A port under test: loaded from ``MODULE:FACTORY``, instantiated, and asked to hold weights.

``FACTORY(channels)`` returns a Keras layer, or a plain function from a Keras tensor to a
Keras tensor (the style of many published ports: ``Conv2D`` layers built inline, static H
and W read from ``x.shape``, ``gamma`` in a bare ``tf.Variable``). The port's framework
builds it (``parity.framework``; for Keras, ``parity.keras_build``); what cannot hold
weights is named here for what it is, by an exception type carrying its data.
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
import re
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from parity.frameworks import keras_resolved_to_tf_keras, variable_path, working_directory_on_path


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


class PortNeedsTensorFlow(PortLoadError):
    """The port calls TensorFlow while Keras runs on another backend, whose tensors
    TensorFlow's functions cannot take (JAX's tracers, PyTorch tensors that need gradients):
    it cannot run here, whatever its math, and the error TensorFlow raises says nothing of
    it. ``call``: the port's line that called TensorFlow, ``backend``: Keras' backend."""

    def __init__(self, call: str, backend: str):
        self.call, self.backend = call, backend
        super().__init__(
            f"the port calls TensorFlow ({call}), whose functions cannot take the {backend} "
            "backend's tensors: check it with KERAS_BACKEND=tensorflow, or write it with "
            "keras.ops"
        )


def tensorflow_call(error: BaseException) -> str | None:
    """Where the code that raised ``error`` called into TensorFlow ('file:line: code'),
    or None if the error did not pass through TensorFlow."""
    frames = traceback.extract_tb(error.__traceback__)
    for caller, callee in itertools.pairwise(frames):
        if _in_tensorflow(callee.filename) and not _in_tensorflow(caller.filename):
            code = f": {caller.line.strip()}" if caller.line else ""
            return f"{Path(caller.filename).name}:{caller.lineno}{code}"
    return None


def _in_tensorflow(filename: str) -> bool:
    return "tensorflow" in Path(filename).parts


@contextlib.contextmanager
def tensorflow_named(framework) -> Iterator[None]:
    """A crash inside TensorFlow on another Keras backend becomes PortNeedsTensorFlow (exit
    status 2: the check cannot run here), not a verdict on the port. ``framework``: the
    port's (``parity.framework``), its tracebacks kept whole meanwhile."""
    if framework.backend == "tensorflow":
        yield
        return
    try:
        with framework.full_tracebacks():
            yield
    except PortCrashed as crash:
        call = tensorflow_call(crash.__cause__ or crash)
        if call is None:
            raise
        raise PortNeedsTensorFlow(call, framework.backend) from crash


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


def instantiate(factory: Callable, channels: int, x: np.ndarray) -> PortInstance:
    """Build the port for ``channels`` on an input like ``x`` (in the port's layout), in
    the port's framework (``parity.framework``)."""
    from parity.framework import port_framework

    framework = port_framework()
    with tensorflow_named(framework):
        return framework.build(factory, channels, x)
