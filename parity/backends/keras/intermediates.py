"""Every tensor a port computes (``parity.core.steps.PortValue``), on TensorFlow.

The port is traced once in a ``tf.function``, its variables frozen into constants at the
values loaded for the example, and the frozen graph run in a session that fetches every
floating result that depends on the input: the port's own operations, whatever wrote them
(Keras 3 or tf.keras 2 layers, ``keras.ops``, ``tf.*`` or ``K.*`` calls, a traced function).
Each operation keeps the Python stack that created it, so it is named by the line of the
port's source that asked for it. Other backends list nothing (None): the localization says so.
"""

from __future__ import annotations

import linecache
import os
import sys
import sysconfig

import numpy as np

from parity.core.steps import PortValue

_HERE = os.path.abspath(__file__)
_SKIPPED = {"Placeholder", "Const", "NoOp", "ReadVariableOp", "VarHandleOp"}


def _library_dirs() -> tuple[str, ...]:
    """Source that is not the port's: the frameworks, NumPy, this package, the stdlib."""
    dirs = [sysconfig.get_paths()["stdlib"]]
    for name in ("tensorflow", "keras", "tf_keras", "numpy", "parity"):
        module = sys.modules.get(name)
        if module is not None and getattr(module, "__file__", None):
            dirs.append(os.path.dirname(module.__file__))
    return tuple(os.path.abspath(d) + os.sep for d in dirs)


def _port_line(traceback, libraries) -> tuple[str, str]:
    """The innermost frame of the port's own source, inside the trace (the caller's frames
    are not the port's: a function port's operations are made when Keras replays its
    graph, from Keras' own frames): ("file.py:42", that line), or ("", "")."""
    frames = list(traceback or ())
    inside = [i for i, frame in enumerate(frames) if os.path.abspath(frame.filename) == _HERE]
    frames = frames[inside[0] + 1 :] if inside else frames
    for frame in reversed(frames):
        path = os.path.abspath(frame.filename)
        if path.startswith(libraries) or "__autograph_generated" in path or path.startswith("<"):
            continue
        line = linecache.getline(frame.filename, frame.lineno).strip()
        return f"{_shown(path)}:{frame.lineno}", line
    return "", ""


def _shown(path: str) -> str:
    """A port file as its author finds it: relative to the working directory where it lies
    below it (``layers/attention.py``, not a bare name that the reference's could share)."""
    relative = os.path.relpath(path)
    return os.path.basename(path) if relative.startswith("..") else relative


def intermediates(layer, x: np.ndarray) -> list[PortValue] | None:
    import tensorflow as tf

    traced = tf.function(lambda t: layer(t)).get_concrete_function(
        tf.TensorSpec(x.shape, tf.float32)
    )
    return graph_values(traced, x)


def graph_values(traced, x: np.ndarray) -> list[PortValue] | None:
    """Every floating tensor of a concrete function of one input (a port traced here, or a
    SavedModel's signature) that depends on the input, its variables frozen; named by the
    port's source lines where the function was traced in this process."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    frozen = convert_variables_to_constants_v2(traced)
    graph = tf.Graph()
    with graph.as_default():
        tf.graph_util.import_graph_def(frozen.graph.as_graph_def(), name="")
    inputs = [op for op in graph.get_operations() if op.type == "Placeholder"]
    if len(inputs) != 1:  # the input is not one placeholder: nothing to fetch against
        return None
    created = {op.name: op for op in traced.graph.get_operations()}
    libraries = _library_dirs()
    on_input = {inputs[0].name}  # operations whose results depend on the input
    fetched = []
    for op in graph.get_operations():
        if op.type in _SKIPPED or not any(t.op.name in on_input for t in op.inputs):
            continue
        on_input.add(op.name)
        fetched += [t for t in op.outputs if t.dtype.is_floating]
    with tf.compat.v1.Session(graph=graph) as session:
        values = session.run(fetched, {inputs[0].outputs[0]: x})
    index_of = {inputs[0].outputs[0].name: 0}
    results = [PortValue(0, inputs[0].outputs[0].name, "input", np.asarray(x), "", "", ())]
    for tensor, value in zip(fetched, values, strict=True):
        if tensor.op.type == "Identity" and tensor.op.inputs[0].name in index_of:
            index_of[tensor.name] = index_of[tensor.op.inputs[0].name]  # a copy: the same value
            continue
        original = created.get(tensor.op.name)
        where, source = _port_line(getattr(original, "traceback", None), libraries)
        reads = tuple(sorted({index_of[t.name] for t in tensor.op.inputs if t.name in index_of}))
        index_of[tensor.name] = len(results)
        results.append(
            PortValue(
                len(results),
                tensor.name,
                tensor.op.type,
                np.asarray(value, dtype=np.float64),
                where,
                source,
                reads,
            )
        )
    return results
