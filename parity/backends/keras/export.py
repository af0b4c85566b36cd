"""The artifact a port ships as: exported with the format's own tool, run with the runtime
users deploy it with, and its intermediate tensors listed for the localization.

Keras 3's ``Model.export`` writes every format (a SavedModel; the TFLite file through
TensorFlow's LiteRT converter; ONNX through tf2onnx), for the example's input shape: TFLite
pins the shapes it was converted for, and the weights of each example are baked in, so each
example is exported anew. TensorFlow's SavedModel loader, the LiteRT interpreter
(``ai-edge-litert``) and ``onnxruntime`` run it back. The artifact's numbers are judged with
its compute dtype's unit: float16's for a file whose weights the converter stored in float16.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from parity.core.errors import CannotCheck
from parity.core.steps import PortValue

INSTALL = 'pip install "danet-parity[export]"'


class ExportRuntimeMissing(CannotCheck):
    """A format's exporter or runtime is not installed (the ``export`` extra)."""

    def __init__(self, artifact: str, module: str):
        super().__init__(
            f"--export {artifact} needs the Python module {module!r}, which is not installed: "
            f"{INSTALL}"
        )


def _float16_weights() -> dict:
    import tensorflow as tf

    return {
        "optimizations": [tf.lite.Optimize.DEFAULT],
        "target_spec": {"supported_types": [tf.float16]},
    }


@dataclass(frozen=True)
class Artifact:
    """A format users ship: how Keras exports it, what runs it, the dtype it computes in."""

    name: str  # as --export names it
    keras_format: str  # Model.export's format
    suffix: str  # the file's ending ("" for a directory)
    runtime: str  # "saved_model", "litert" or "onnxruntime"
    precision: str = "float32"  # the compute dtype its numbers are judged in
    options: Callable[[], dict] = field(default=dict, compare=False)  # the converter's
    training: bool = False  # the export traced in training mode (a planted bug's)

    @property
    def needs(self) -> tuple[str, ...]:
        """The modules it cannot be exported or run without."""
        return {
            "saved_model": (),
            "litert": ("ai_edge_litert",),
            "onnxruntime": ("tf2onnx", "onnx", "onnxruntime"),
        }[self.runtime]


ARTIFACTS = {
    artifact.name: artifact
    for artifact in (
        Artifact("saved_model", "tf_saved_model", "", "saved_model"),
        Artifact("tflite", "litert", ".tflite", "litert"),
        Artifact("tflite-fp16", "litert", ".tflite", "litert", "float16", _float16_weights),
        Artifact("onnx", "onnx", ".onnx", "onnxruntime"),
    )
}


def require(artifact: Artifact) -> None:
    """Raises ExportRuntimeMissing when the format's exporter or runtime is missing."""
    for module in artifact.needs:
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise ExportRuntimeMissing(artifact.name, module) from error


@contextlib.contextmanager
def _converters_quiet():
    """The converters' chatter (tf2onnx's NumPy FutureWarnings, TensorFlow's
    deprecations, LiteRT's delegate line) is theirs, not the port's."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def export(layer, x: np.ndarray, artifact: Artifact, directory: str) -> str:
    """``layer`` exported for inputs of ``x``'s shape into ``directory``; its path."""
    import keras

    class Serving(keras.Model):
        def __init__(self, port):
            super().__init__()
            self.port = port

        def call(self, inputs):
            if artifact.training:
                return self.port(inputs, training=True)
            return self.port(inputs)

    path = os.path.join(directory, f"port{artifact.suffix}")
    signature = [keras.InputSpec(shape=x.shape, dtype="float32")]
    serving = Serving(layer)
    serving(x)  # built, as export requires
    with _converters_quiet():
        serving.export(
            path,
            format=artifact.keras_format,
            verbose=False,
            input_signature=signature,
            **artifact.options(),
        )
    return path


def run(artifact: Artifact, path: str, x: np.ndarray) -> tuple[np.ndarray, ...]:
    """The artifact's outputs on ``x``, run by its runtime."""
    with _converters_quiet():
        if artifact.runtime == "saved_model":
            import tensorflow as tf

            loaded = tf.saved_model.load(path)
            outputs = loaded.serve(tf.constant(x))
            several = isinstance(outputs, (list, tuple))
            return tuple(np.asarray(y) for y in (outputs if several else [outputs]))
        if artifact.runtime == "litert":
            return _litert_outputs(_interpreter(path), x)
        session = _onnx_session(path)
        return tuple(session.run(None, {session.get_inputs()[0].name: x}))


def tensors(artifact: Artifact, path: str, x: np.ndarray) -> list[PortValue] | None:
    """Every floating tensor the artifact computes on ``x``, in the order computed, named by
    the artifact's own names (TFLite's tensors, ONNX's node outputs; a SavedModel's graph
    operations); each reads the values of the tensors its operation takes."""
    with _converters_quiet():
        if artifact.runtime == "litert":
            return _litert_tensors(path, x)
        if artifact.runtime == "onnxruntime":
            return _onnx_tensors(path, x)
        return _saved_model_tensors(path, x)


def _interpreter(path: str, preserve: bool = False):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path, experimental_preserve_all_tensors=preserve)
    interpreter.allocate_tensors()
    return interpreter


def _litert_outputs(interpreter, x: np.ndarray) -> tuple[np.ndarray, ...]:
    """The outputs in the model's order: the signature's ``output_0``, ``output_1``, ...
    (``get_output_details`` lists a model's outputs in an order of the converter's own)."""
    (signature,) = interpreter.get_signature_list()
    runner = interpreter.get_signature_runner(signature)
    (given,) = runner.get_input_details()
    outputs = runner(**{given: x})
    return tuple(np.array(outputs[name]) for name in sorted(outputs, key=_position))


def _position(name: str) -> tuple[int, str]:
    """``output_10`` after ``output_9``."""
    stem, _, number = name.rpartition("_")
    return (int(number), stem) if number.isdigit() else (-1, name)


def _litert_tensors(path: str, x: np.ndarray) -> list[PortValue]:
    interpreter = _interpreter(path, preserve=True)
    (given,) = interpreter.get_input_details()
    interpreter.set_tensor(given["index"], x)
    interpreter.invoke()
    # A fused operation's tensor is named by every operation fused into it, joined by ";".
    names = {d["index"]: d["name"].split(";")[0] for d in interpreter.get_tensor_details()}
    index_of = {given["index"]: 0}
    values = [PortValue(0, given["name"], "input", np.asarray(x, np.float64), "", "", ())]
    for op in interpreter._get_ops_details():  # LiteRT's only listing of its operations
        reads = tuple(sorted({index_of[i] for i in op["inputs"] if i in index_of}))
        if not reads:  # an operation on constants alone (a dequantized weight)
            continue
        for tensor in op["outputs"]:
            value = interpreter.get_tensor(tensor)
            if not np.issubdtype(value.dtype, np.floating):
                continue
            index_of[tensor] = len(values)
            values.append(
                PortValue(
                    len(values),
                    names[tensor],
                    op["op_name"],
                    np.asarray(value, np.float64),
                    "",
                    "",
                    reads,
                )
            )
    return values


def _onnx_session(path: str, model=None):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    source = path if model is None else model.SerializeToString()
    return onnxruntime.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def _onnx_tensors(path: str, x: np.ndarray) -> list[PortValue]:
    import onnx

    model = onnx.shape_inference.infer_shapes(onnx.load(path))
    graph = model.graph
    typed = {v.name: v for v in (*graph.value_info, *graph.output)}
    listed = {o.name for o in graph.output}
    for node in graph.node:
        for name in node.output:
            if name and name not in listed:
                untyped = onnx.helper.make_empty_tensor_value_info(name)
                graph.output.append(typed.get(name) or untyped)
                listed.add(name)
    session = _onnx_session(path, model)
    given = session.get_inputs()[0].name
    names = [o.name for o in session.get_outputs()]
    results = dict(zip(names, session.run(names, {given: x}), strict=True))
    index_of = {given: 0}
    values = [PortValue(0, given, "input", np.asarray(x, np.float64), "", "", ())]
    for node in graph.node:
        reads = tuple(sorted({index_of[i] for i in node.input if i in index_of}))
        if not reads:
            continue
        for name in node.output:
            value = results.get(name)
            if value is None or not np.issubdtype(np.asarray(value).dtype, np.floating):
                continue
            index_of[name] = len(values)
            values.append(
                PortValue(
                    len(values), name, node.op_type, np.asarray(value, np.float64), "", "", reads
                )
            )
    return values


def _saved_model_tensors(path: str, x: np.ndarray) -> list[PortValue] | None:
    import tensorflow as tf

    from parity.backends.keras.intermediates import graph_values

    loaded = tf.saved_model.load(path)
    function = loaded.serve.get_concrete_function(tf.TensorSpec(x.shape, tf.float32))
    return graph_values(function, x)
