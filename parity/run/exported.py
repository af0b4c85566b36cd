"""Checking the artifact a port ships as (``parity check --export FORMAT``): the same
examples, reference and policy as the port's check, on the exported file's outputs.

The artifact is exported anew per example (its weights are the example's) and judged with
its compute dtype's unit: float32's, or float16's for a file whose weights the converter
stored in float16, against the reference run in that dtype, as mixed precision is judged.
Gradients are not an artifact's: outputs only, said in a note.

An int8 file is measured, not judged (int8 arithmetic is not float arithmetic, so no float
parity is claimed): each output's error against the float64 truth in units of that output's
quantization step (the scale of the int8 tensor its final DEQUANTIZE reads). 0.5 is the
rounding of the output itself; what lies beyond it is what the int8 layers before it added.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from parity.core.artifacts import ARTIFACTS, Artifact
from parity.core.policy import DEFAULT_POLICY, TolerancePolicy
from parity.core.spec import ModulePair
from parity.core.strategies import Example
from parity.run.engine import Checker

OUTPUTS_ONLY_NOTE = (
    "{artifact}: outputs only (an exported artifact has no gradients to check); "
    "exported and run anew for each example"
)
INT8_NOTE = "int8: measured in quantization steps, no float parity claimed"

DEFAULT_EXPORT_EXAMPLES = 10
"""Examples per module under --export: each is an export and a load (about 1 s for an
attention module, 9 s for the narrow DANet on this project's 2-core machine)."""


class ArtifactChecker(Checker):
    """A Checker of ``pair``'s port exported as ``artifact``. Raises ExportRuntimeMissing
    where its tools are not installed, UsageError on a backend or a Keras that cannot
    export it."""

    def __init__(
        self, pair: ModulePair, artifact: Artifact, policy: TolerancePolicy = DEFAULT_POLICY
    ):
        super().__init__(replace(pair, gradients=False), policy, precision=artifact.precision)
        self.artifact = artifact
        self.framework = self.framework.exported(artifact)
        self.framework.notes = self.notes  # what running the file found, said with the verdict
        self.notes.append(OUTPUTS_ONLY_NOTE.format(artifact=artifact.name))

    def fresh(self) -> ArtifactChecker:
        return ArtifactChecker(self.pair, self.artifact, self.policy)


@dataclass(frozen=True)
class Int8Error:
    example: Example
    output: str
    step: float  # the output's quantization step
    max_steps: float  # max|artifact - truth| / step
    mean_steps: float  # mean|artifact - truth| / step
    scale: float  # max|truth|


class Int8Measurement(ArtifactChecker):
    """An ArtifactChecker whose every example passes (the policy's factor is infinite) and
    whose errors are kept in quantization steps, per example and output."""

    def __init__(self, pair: ModulePair, artifact: Artifact):
        super().__init__(pair, artifact, replace(DEFAULT_POLICY, factor=math.inf))
        self.notes[-1] += f"; {INT8_NOTE}"
        self.measured: list[Int8Error] = []

    def fresh(self) -> Int8Measurement:
        return Int8Measurement(self.pair, self.artifact)

    def _check(self, example, **options):
        report = super()._check(example, **{**options, "keep": True})
        steps = self.framework.last_steps
        for (name, truth), step in zip(report.truth.items(), steps, strict=True):
            error = np.abs(np.asarray(report.port[name], np.float64) - truth)
            in_steps = error / step if step > 0 else np.full_like(error, np.inf)
            self.measured.append(
                Int8Error(
                    example,
                    name,
                    step,
                    float(np.max(in_steps)),
                    float(np.mean(in_steps)),
                    float(np.max(np.abs(truth))),
                )
            )
        return report


def exported_checker(
    pair: ModulePair, artifact_name: str, policy: TolerancePolicy = DEFAULT_POLICY
) -> ArtifactChecker:
    """The checker of ``pair``'s port exported as ``artifact_name`` (``ARTIFACTS``); an int8
    file's measures instead."""
    artifact = ARTIFACTS[artifact_name]
    if artifact.quantized:
        return Int8Measurement(pair, artifact)
    return ArtifactChecker(pair, artifact, policy)


def int8_table(measured: list[Int8Error], module: str) -> str:
    """Per output: the worst and the median over examples of the largest error, in steps."""
    names = list(dict.fromkeys(m.output for m in measured))
    examples = len({m.example for m in measured})
    rows = [
        f"{module}: int8 measured on {examples} examples (error against float64 truth in "
        "units of each output's quantization step; 0.5 is the output's own rounding)",
        f"  {'tensor':<12} {'worst':>8} {'median':>8} {'mean':>8} {'step / scale':>13}",
    ]
    for name in names:
        of = [m for m in measured if m.output == name]
        worst = max(of, key=lambda m: m.max_steps)
        rows.append(
            f"  {name:<12} {worst.max_steps:>8.3g} "
            f"{float(np.median([m.max_steps for m in of])):>8.3g} "
            f"{float(np.mean([m.mean_steps for m in of])):>8.3g} "
            f"{float(np.median([m.step / m.scale for m in of if m.scale])):>13.3g}"
        )
    worst = max(measured, key=lambda m: m.max_steps)
    rows.append(
        f"{module}: worst at {worst.example.to_text()} ({worst.output}: "
        f"{worst.max_steps:.3g} steps of {worst.step:.3g})"
    )
    return "\n".join(rows)
