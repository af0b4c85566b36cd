"""Checking the artifact a port ships as (``parity check --export FORMAT``): the same
examples, reference and policy as the port's check, on the exported file's outputs.

The artifact is exported anew per example (its weights are the example's) and judged with
its compute dtype's unit: float32's, or float16's for a file whose weights the converter
stored in float16, against the reference run in that dtype, as mixed precision is judged.
Gradients are not an artifact's: outputs only, said in a note."""

from __future__ import annotations

from dataclasses import replace

from parity.backends.keras import export
from parity.backends.keras.artifact_framework import ArtifactFramework
from parity.core.errors import UsageError
from parity.core.policy import DEFAULT_POLICY, TolerancePolicy
from parity.core.spec import ModulePair
from parity.run.engine import Checker

OUTPUTS_ONLY_NOTE = (
    "{artifact}: outputs only (an exported artifact has no gradients to check); "
    "exported and run anew for each example"
)

DEFAULT_EXPORT_EXAMPLES = 10
"""Examples per module under --export: each is an export and a load (about 1 s for an
attention module, 9 s for the narrow DANet on this project's 2-core machine)."""


class ArtifactChecker(Checker):
    """A Checker of ``pair``'s port exported as ``artifact`` (an ``export.Artifact``).
    Raises ExportRuntimeMissing where its tools are not installed, UsageError on a backend
    or a Keras that cannot export it."""

    def __init__(
        self, pair: ModulePair, artifact: export.Artifact, policy: TolerancePolicy = DEFAULT_POLICY
    ):
        import keras

        if keras.backend.backend() != "tensorflow":
            raise UsageError(
                f"--export {artifact.name} exports through TensorFlow: run it with "
                "KERAS_BACKEND=tensorflow"
            )
        export.require(artifact)
        super().__init__(replace(pair, gradients=False), policy, precision=artifact.precision)
        if self.framework.name.startswith("tf.keras"):
            raise UsageError(
                f"--export {artifact.name} exports Keras 3 ports (Model.export); this port "
                "runs under tf.keras 2"
            )
        self.artifact = artifact
        self.framework = ArtifactFramework(self.framework, artifact)
        self.notes.append(OUTPUTS_ONLY_NOTE.format(artifact=artifact.name))

    def fresh(self) -> ArtifactChecker:
        return ArtifactChecker(self.pair, self.artifact, self.policy)


def exported_checker(
    pair: ModulePair, artifact_name: str, policy: TolerancePolicy = DEFAULT_POLICY
) -> ArtifactChecker:
    """The checker of ``pair``'s port exported as ``artifact_name`` (``export.ARTIFACTS``);
    an int8 file's measures instead (``parity.run.quantized``)."""
    artifact = export.ARTIFACTS[artifact_name]
    if artifact.quantized:
        from parity.run.quantized import Int8Measurement

        return Int8Measurement(pair, artifact)
    return ArtifactChecker(pair, artifact, policy)
