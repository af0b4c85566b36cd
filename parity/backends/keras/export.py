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

import numpy as np

from parity.backends.quiet import native_stderr_silenced
from parity.core.artifacts import Artifact, ExportRuntimeMissing
from parity.core.steps import PortValue

CALIBRATION_INPUTS = 16
"""Inputs the int8 converter calibrates its activation ranges on."""


def _float16_weights(x: np.ndarray) -> dict:
    import tensorflow as tf

    return {
        "optimizations": [tf.lite.Optimize.DEFAULT],
        "target_spec": {"supported_types": [tf.float16]},
    }


def _int8(x: np.ndarray) -> dict:
    """Full integer quantization (weights and activations in int8, float in and out),
    calibrated on inputs drawn as the pair's strategy draws them: standard normal values at
    the example's scale, of its shape."""
    import tensorflow as tf

    scale = float(np.std(x)) or 1.0
    rng = np.random.default_rng(0)

    def representative():
        for _ in range(CALIBRATION_INPUTS):
            yield [(scale * rng.standard_normal(x.shape)).astype(np.float32)]

    return {
        "optimizations": [tf.lite.Optimize.DEFAULT],
        "representative_dataset": representative,
        "target_spec": {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]},
    }


CONVERTER_OPTIONS = {"": lambda x: {}, "float16": _float16_weights, "int8": _int8}
"""Artifact.quantization -> the converter's options for an input like x."""


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
    deprecations, the TFLite converter's and LiteRT's lines on the native stderr) is theirs,
    not the port's; their errors still come as exceptions."""
    with warnings.catch_warnings(), native_stderr_silenced():
        warnings.simplefilter("ignore")
        yield


def export(layer, x: np.ndarray, artifact: Artifact, directory: str) -> str:
    """``layer`` exported for inputs of ``x``'s shape into ``directory``; its path. A Keras 3
    layer through ``Model.export``; any other TensorFlow callable (a tf.keras 2 layer, a
    converter's model) through the same steps by TensorFlow's own tools."""
    import keras

    path = os.path.join(directory, f"port{artifact.suffix}")
    if not isinstance(layer, keras.layers.Layer):
        with _converters_quiet():
            _export_tensorflow(layer, x, artifact, path, directory)
        return path

    class Serving(keras.Model):
        def __init__(self, port):
            super().__init__()
            self.port = port

        def call(self, inputs):
            if artifact.training:
                return self.port(inputs, training=True)
            return self.port(inputs)

    signature = [keras.InputSpec(shape=x.shape, dtype="float32")]
    serving = Serving(layer)
    serving(x)  # built, as export requires
    with _converters_quiet():
        serving.export(
            path,
            format=artifact.keras_format,
            verbose=False,
            input_signature=signature,
            **CONVERTER_OPTIONS[artifact.quantization](x),
        )
    return path


class DelegateRefused(RuntimeError):
    """LiteRT's default delegate, XNNPACK, would not prepare the file: users running it
    with the default interpreter get this error."""


def _export_tensorflow(layer, x: np.ndarray, artifact: Artifact, path: str, directory: str):
    """What ``Model.export`` does, for a callable of another Keras: a SavedModel of one
    ``serve`` function at the example's shape; the TFLite converter on that SavedModel with
    Keras' settings; tf2onnx on the function."""
    import tensorflow as tf

    spec = tf.TensorSpec(x.shape, tf.float32)
    module = tf.Module()
    module.port = layer  # its variables, tracked

    @tf.function(input_signature=[spec])
    def serve(inputs):
        return layer(inputs, training=True) if artifact.training else layer(inputs)

    module.serve = serve
    if artifact.runtime == "onnxruntime":
        import tf2onnx
        from keras.src.export.tf2onnx_lib import patch_tf2onnx

        patch_tf2onnx()  # as Model.export does: tf2onnx 1.17 predates NumPy 2
        tf2onnx.convert.from_function(serve, [spec], output_path=path)
        return
    saved = path if artifact.runtime == "saved_model" else os.path.join(directory, "saved")
    tf.saved_model.save(module, saved)
    if artifact.runtime == "saved_model":
        return
    converter = tf.lite.TFLiteConverter.from_saved_model(saved)
    converter.target_spec.supported_ops = [
        tf.lite.OpsSet.TFLITE_BUILTINS,
        tf.lite.OpsSet.SELECT_TF_OPS,
    ]
    converter.experimental_enable_resource_variables = True
    for name, value in CONVERTER_OPTIONS[artifact.quantization](x).items():
        if name == "target_spec":
            for key, setting in value.items():
                setattr(converter.target_spec, key, setting)
        else:
            setattr(converter, name, value)
    with open(path, "wb") as file:
        file.write(converter.convert())


def run(
    artifact: Artifact, path: str, x: np.ndarray, delegate: bool = True
) -> tuple[np.ndarray, ...]:
    """The artifact's outputs on ``x``, run by its runtime; ``delegate``: a TFLite file with
    LiteRT's default delegate (DelegateRefused where it will not take the file), else with
    LiteRT's built-in kernels alone."""
    with _converters_quiet():
        if artifact.runtime == "saved_model":
            import tensorflow as tf

            loaded = tf.saved_model.load(path)
            outputs = loaded.serve(tf.constant(x))
            several = isinstance(outputs, (list, tuple))
            return tuple(np.asarray(y) for y in (outputs if several else [outputs]))
        if artifact.runtime == "litert":
            if not delegate:
                return _litert_outputs(_interpreter(path, delegate=False), x)
            try:
                interpreter = _interpreter(path)
            except RuntimeError as error:
                if "xnnpack" not in str(error).lower():  # not XNNPACK's refusal
                    raise
                raise DelegateRefused(" ".join(str(error).split())) from error
            return _litert_outputs(interpreter, x)
        session = _onnx_session(path)
        return tuple(session.run(None, {session.get_inputs()[0].name: x}))


def tensors(artifact: Artifact, path: str, x: np.ndarray) -> list[PortValue] | None:
    """Every real-valued tensor the artifact computes on ``x`` (an int8 tensor dequantized,
    with its step), in the order computed, named by
    the artifact's own names (TFLite's tensors, ONNX's node outputs; a SavedModel's graph
    operations); each reads the values of the tensors its operation takes."""
    with _converters_quiet():
        if artifact.runtime == "litert":
            return _litert_tensors(path, x)
        if artifact.runtime == "onnxruntime":
            return _onnx_tensors(path, x)
        return _saved_model_tensors(path, x)


def _interpreter(path: str, preserve: bool = False, delegate: bool = True):
    """The LiteRT interpreter users run; ``preserve``: every intermediate tensor kept, and
    no delegate (XNNPACK's kernels would compute whole subgraphs without them);
    ``delegate`` False: LiteRT's built-in kernels alone."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    if preserve or not delegate:
        interpreter = Interpreter(
            model_path=path,
            experimental_preserve_all_tensors=preserve,
            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        )
    else:
        interpreter = Interpreter(model_path=path)
    interpreter.allocate_tensors()
    return interpreter


def _operations(interpreter) -> list[dict]:
    """The model's own operations, in order (LiteRT's only listing of them), without the
    DELEGATE nodes a delegate adds in place of the operations it runs."""
    return [op for op in interpreter._get_ops_details() if op["op_name"] != "DELEGATE"]


def _litert_outputs(interpreter, x: np.ndarray) -> tuple[np.ndarray, ...]:
    """The outputs in the model's order: the signature's ``output_0``, ``output_1``, ...
    (``get_output_details`` lists a model's outputs in an order of the converter's own)."""
    (signature,) = interpreter.get_signature_list()
    runner = interpreter.get_signature_runner(signature)
    (given,) = runner.get_input_details()
    outputs = runner(**{given: x})
    return tuple(np.array(outputs[name]) for name in sorted(outputs, key=_position))


def output_steps(path: str) -> tuple[float, ...]:
    """Each output's quantization step in an int8 file with float outputs: the scale of the
    int8 tensor that its final DEQUANTIZE reads (0 where an output is not quantized)."""
    with _converters_quiet():
        interpreter = _interpreter(path, delegate=False)
    details = {d["index"]: d for d in interpreter.get_tensor_details()}
    made_by = {}
    for op in _operations(interpreter):
        for tensor in op["outputs"]:
            made_by[tensor] = op
    (signature,) = interpreter.get_signature_list()
    outputs = interpreter.get_signature_list()[signature]["outputs"]
    runner = interpreter.get_signature_runner(signature)
    indices = runner.get_output_details()
    steps = []
    for name in sorted(outputs, key=_position):
        op = made_by.get(indices[name]["index"])
        scale = 0.0
        if op is not None and op["op_name"] == "DEQUANTIZE":
            scale = float(details[op["inputs"][0]]["quantization"][0])
        steps.append(scale)
    return tuple(steps)


def _position(name: str) -> tuple[int, str]:
    """``output_10`` after ``output_9``."""
    stem, _, number = name.rpartition("_")
    return (int(number), stem) if number.isdigit() else (-1, name)


def _litert_tensors(path: str, x: np.ndarray) -> list[PortValue]:
    interpreter = _interpreter(path, preserve=True)
    (given,) = interpreter.get_input_details()
    interpreter.set_tensor(given["index"], x)
    interpreter.invoke()
    details = {d["index"]: d for d in interpreter.get_tensor_details()}
    # A fused operation's tensor is named by every operation fused into it, joined by ";".
    names = {index: d["name"].split(";")[0] for index, d in details.items()}
    index_of = {given["index"]: 0}
    values = [PortValue(0, given["name"], "input", np.asarray(x, np.float64), "", "", ())]
    for op in _operations(interpreter):
        reads = tuple(sorted({index_of[i] for i in op["inputs"] if i in index_of}))
        if not reads:  # an operation on constants alone (a dequantized weight)
            continue
        for tensor in op["outputs"]:
            value, step = _dequantized(interpreter.get_tensor(tensor), details[tensor])
            if value is None:
                continue
            index_of[tensor] = len(values)
            values.append(
                PortValue(len(values), names[tensor], op["op_name"], value, "", "", reads, step)
            )
    return values


def _dequantized(value: np.ndarray, detail: dict) -> tuple[np.ndarray | None, float]:
    """A tensor's real values and its quantization step (0 for a float tensor); None for an
    integer tensor that holds no real values (a shape, an index)."""
    if np.issubdtype(value.dtype, np.floating):
        return np.asarray(value, np.float64), 0.0
    scale, zero_point = detail["quantization"]
    if not scale:
        return None, 0.0
    return (value.astype(np.float64) - zero_point) * scale, float(scale)


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
