"""A port judged as the artifact it ships as: the Keras framework, except that a forward
pass exports the port (its weights loaded for the example) and runs the exported file, and
the tensors the localization reads are the artifact's. Gradients are not an artifact's:
the checker built on it compares outputs only (``parity.run.exported``)."""

from __future__ import annotations

import contextlib
import tempfile

import numpy as np

from parity.backends.keras import export
from parity.core.artifacts import Artifact
from parity.core.errors import PortCrashed

DELEGATE_NOTE_START = "LiteRT's default delegate"
DELEGATE_NOTE = (
    "{artifact}: " + DELEGATE_NOTE_START + " (XNNPACK) will not run this file (first: "
    "{error}); users running it with the default interpreter get that error. Run here with "
    "LiteRT's built-in kernels instead"
)


class ArtifactFramework:
    """Wraps the framework a port is built in; everything but running it is that one's."""

    def __init__(self, framework, artifact: Artifact):
        export.require(artifact)
        self._framework = framework
        self.artifact = artifact
        self.name = f"{framework.name}, exported as {artifact.name}"
        self.last_steps: tuple[float, ...] = ()  # an int8 file's output steps, last forward
        self.notes: list[str] = []  # said with the verdict (the checker shares its list)

    def __getattr__(self, name):
        return getattr(self._framework, name)

    def dtype_policy(self, name: str):
        """The port is built in float32 whatever the artifact computes in: the converter,
        not Keras' mixed precision, makes a float16 file."""
        return contextlib.nullcontext()

    def forward(self, layer, x: np.ndarray, mode: str = "eager") -> tuple[np.ndarray, ...]:
        with tempfile.TemporaryDirectory(prefix="parity-export-") as directory:
            path = self._exported(layer, x, directory)
            if self.artifact.quantized:
                self.last_steps = export.output_steps(path)
            try:
                return export.run(self.artifact, path, x)
            except export.DelegateRefused as refused:
                outputs = export.run(self.artifact, path, x, delegate=False)
                if not any(DELEGATE_NOTE_START in note for note in self.notes):
                    self.notes.append(
                        DELEGATE_NOTE.format(artifact=self.artifact.name, error=refused)
                    )
                return outputs

    def intermediates(self, layer, x: np.ndarray):
        with tempfile.TemporaryDirectory(prefix="parity-export-") as directory:
            path = self._exported(layer, x, directory)
            return export.tensors(self.artifact, path, x)

    def vjp(self, layer, x, cotangents, variables, mode: str = "eager"):
        raise TypeError("an exported artifact has no gradients to check")

    def _exported(self, layer, x: np.ndarray, directory: str) -> str:
        try:
            return export.export(layer, x, self.artifact, directory)
        except Exception as error:
            message = str(error).strip().splitlines()
            raise PortCrashed(
                f"exporting the port as {self.artifact.name} failed on input of shape "
                f"{x.shape}: {type(error).__name__}: {message[0] if message else ''}",
                input_shape=x.shape,
            ) from error
