"""The artifacts a port ships as (``parity check --export FORMAT``), as data: how Keras
exports each, what runs it, the dtype its numbers are judged in. Exporting and running them
is the Keras backend's (``parity.backends.keras.export``)."""

from __future__ import annotations

from dataclasses import dataclass

from parity.core.errors import CannotCheck

INSTALL = 'pip install "danet-parity[export]"'


class ExportRuntimeMissing(CannotCheck):
    """A format's exporter or runtime is not installed (the ``export`` extra)."""

    def __init__(self, artifact: str, module: str):
        super().__init__(
            f"--export {artifact} needs the Python module {module!r}, which is not installed: "
            f"{INSTALL}"
        )


@dataclass(frozen=True)
class Artifact:
    """A format users ship."""

    name: str  # as --export names it
    keras_format: str  # Model.export's format
    suffix: str  # the file's ending ("" for a directory)
    runtime: str  # "saved_model", "litert" or "onnxruntime"
    precision: str = "float32"  # the compute dtype its numbers are judged in
    quantization: str = ""  # what the converter stores: "" (float32), "float16" or "int8"
    training: bool = False  # the export traced in training mode (a planted bug's)

    @property
    def quantized(self) -> bool:
        """int8: measured in quantization steps, no parity claimed."""
        return self.quantization == "int8"

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
        Artifact("tflite-fp16", "litert", ".tflite", "litert", "float16", "float16"),
        Artifact("onnx", "onnx", ".onnx", "onnxruntime"),
        Artifact("tflite-int8", "litert", ".tflite", "litert", quantization="int8"),
    )
}
