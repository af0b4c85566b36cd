"""An int8 artifact measured, not judged (``parity check --export tflite-int8``): int8
arithmetic is not float arithmetic, so no float parity is claimed. Each output's error
against the float64 truth is reported in units of that output's quantization step (the
scale of the int8 tensor its final DEQUANTIZE reads): 0.5 is the rounding of the output
itself, and what lies beyond it is what the int8 layers before it added."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from parity.backends.keras import export
from parity.core.policy import DEFAULT_POLICY
from parity.core.spec import ModulePair
from parity.core.strategies import Example
from parity.run.exported import ArtifactChecker


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

    def __init__(self, pair: ModulePair, artifact: export.Artifact):
        super().__init__(pair, artifact, replace(DEFAULT_POLICY, factor=math.inf))
        self.notes.remove(export_note := self.notes[-1])
        self.notes.append(
            export_note + "; int8: measured in quantization steps, no float parity claimed"
        )
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


def table(measured: list[Int8Error], module: str) -> str:
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
