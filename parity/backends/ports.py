"""A port under test: loaded from ``MODULE:FACTORY``, instantiated, and asked to hold weights.

``FACTORY(channels)`` returns a Keras layer, or a plain function from a Keras tensor to a
Keras tensor (the style of many published ports: ``Conv2D`` layers built inline, static H
and W read from ``x.shape``, ``gamma`` in a bare ``tf.Variable``). The port's framework
builds it (``parity.backends.protocol``; for Keras, ``parity.backends.keras.build``); what cannot
hold weights is named by an exception type carrying its data (``parity.core.errors``). A port
that implements a registered module becomes that module's pair (``pair_for_port``).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import itertools
import re
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from parity.backends.protocol import PortInstance, port_framework
from parity.backends.which_keras import (
    keras2_sign,
    keras_resolved_to_tf_keras,
    legacy_keras_enabled,
    working_directory_on_path,
)
from parity.core import registry
from parity.core.errors import (
    Keras2Needed,
    ModuleNotDetected,
    PortCrashed,
    PortLoadError,
    PortNeedsTensorFlow,
    SelectionError,
    UnmappedWeights,
)
from parity.core.replay import Origin
from parity.core.spec import ModulePair, with_port
from parity.core.weight_map import map_weights


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
    port's (``parity.backends.protocol``), its tracebacks kept whole meanwhile."""
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


IMPORT_SECONDS = 120
"""How long importing a port's module may take: a module that trains or serves when
imported (a script pointed at by mistake) is stopped then, not waited for."""


class _ImportTookTooLong(Exception):
    pass


@contextlib.contextmanager
def _bounded_import(seconds: int):
    """The import inside stopped after ``seconds`` (on the main thread of a Unix process,
    where an alarm can interrupt it), with no standard input to wait for."""
    stdin = sys.stdin
    sys.stdin = io.StringIO("")  # input() raises EOFError instead of waiting
    alarm = threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGALRM")
    if alarm:

        def stop(signum, frame):
            raise _ImportTookTooLong

        previous = signal.signal(signal.SIGALRM, stop)
        signal.alarm(seconds)
    try:
        yield
    finally:
        if alarm:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
        sys.stdin = stdin


def import_target(target: str, option: str = "--port", what: str = "FACTORY") -> Any:
    """``package.module:attribute`` -> the object, importing from the working directory."""
    module_name, sep, attribute = target.partition(":")
    if not sep or not module_name or not attribute:
        raise PortLoadError(f"{option} expects MODULE:{what}. Received: {target!r}")
    if module_name.endswith(".py") or "/" in module_name or "\\" in module_name:
        dotted = ".".join(Path(module_name).with_suffix("").parts).lstrip(".")
        raise PortLoadError(
            f"{option} {target}: MODULE is a module name importable from the working "
            f"directory, not a file path; did you mean {option} {dotted}:{attribute}?"
        )
    working_directory_on_path()
    try:
        with (
            keras_resolved_to_tf_keras(),
            contextlib.redirect_stdout(sys.stderr),
            _bounded_import(IMPORT_SECONDS),
        ):
            module = importlib.import_module(module_name)
    except _ImportTookTooLong:
        raise PortLoadError(
            f"importing module {module_name!r} for {option} {target} took more than "
            f"{IMPORT_SECONDS} s and was stopped: is it a script that trains or serves when "
            "imported? (guard its script part with if __name__ == '__main__':)"
        ) from None
    except SystemExit as error:
        raise PortLoadError(
            f"importing module {module_name!r} for {option} {target} called "
            f"sys.exit({error.code!r}): is it a script rather than the module that holds "
            "the port? (guard its script part with if __name__ == '__main__':)"
        ) from None
    except Exception as error:
        raise_if_keras2(error)
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


def instantiate(factory: Callable, channels: int, x: np.ndarray) -> PortInstance:
    """Build the port for ``channels`` on an input like ``x`` (in the port's layout), in
    the port's framework (``parity.backends.protocol``)."""
    framework = port_framework()
    try:
        with tensorflow_named(framework):
            return framework.build(factory, channels, x)
    except (PortLoadError, PortCrashed) as error:
        raise_if_keras2(error)
        if legacy_keras_enabled():
            BUILD_FAILURES.append(f"{type(error).__name__}: {error}")
        raise


BUILD_FAILURES: list[str] = []
"""The port's failures to build under tf.keras 2, this process: a ``tf.keras`` port that
cannot build there may be Keras 3 code (TensorFlow 2.16 and later hand out Keras 3 as
``tf.keras``), and the command then checks it under Keras 3 as well."""


def raise_if_keras2(error: BaseException) -> None:
    """Keras2Needed, from ``error``, where Keras 3 ran the port and it failed the way Keras 2
    code fails (``which_keras.keras2_sign``)."""
    sign = None if legacy_keras_enabled() else keras2_sign(error)
    if sign:
        raise Keras2Needed(sign) from error


# -- a port as a module pair -------------------------------------------------------------


def detect_module(factory: Callable[[int], Any], data_format: str = "channels_last") -> str:
    """Which bundled module a port implements: the one whose parameters map onto the port's
    weights with none left over (a PAM port also has a ``gamma`` that CAM would take)."""
    channels = 16
    shape = (1, channels, 3, 5) if data_format == "channels_first" else (1, 3, 5, channels)
    port = instantiate(factory, channels, np.zeros(shape, np.float32))
    trainable = [w for w in port.weights if w.trainable]
    for name, pair in registry.pairs().items():
        reference = pair.make_reference(channels)
        shapes = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
        try:
            bound = map_weights(shapes, port.weights, name_of=port.name_of, roles=pair.roles)
        except UnmappedWeights:
            continue
        if len(bound) == len(trainable):
            return name
    raise ModuleNotDetected(
        [f"{port.name_of(w)} {tuple(w.shape)}" for w in trainable], registry.names()
    )


def pair_for_port(
    target: str,
    *,
    weight_map: dict[str, str] | None = None,
    data_format: str | None = None,
    origin: Origin | None = None,
) -> ModulePair:
    """``NAME=MODULE:FACTORY`` (or ``MODULE:FACTORY``, the module detected) as a pair."""
    module, sep, rest = target.partition("=")
    if not sep:
        module, rest = "", target
    factory = load_factory(rest)
    module = module or detect_module(factory, data_format or "channels_last")
    if module not in registry.names():
        known = sorted(registry.names())
        raise SelectionError(
            f"unknown module {module!r} in --port {target}; expected one of {known}"
        )
    return with_port(
        registry.pair(module),
        factory,
        weight_map=weight_map,
        data_format=data_format,
        origin=origin or Origin(port=rest),
    )
