"""What the pattern of the failing tensors says by itself, with no hypothesis run: a
forward pass that is exact while gradients are off, or errors everywhere too small for a
structural bug."""

from __future__ import annotations

import math

from parity.core.hypotheses import GRADIENTS_ONLY, PRECISION_LEVEL
from parity.diagnosis.findings import Finding
from parity.run.engine import ExampleReport

PRECISION_LIMIT = 3e-2
"""A failure whose relative errors all stay below this is precision-level, not structural:
a structural bug moves outputs by a sizeable fraction of their scale."""

TF32_LEVEL = 4e-3
"""Gradients whose relative errors all stay below this (four TF32 epsilons, half a
bfloat16 epsilon) are off the way a backward pass in TF32 or float16 is, and not called a bug in the
gradients: the planted CAM with its gradient blocked is off by 0.029 at its smallest
counterexample."""


def gradients_only(report: ExampleReport) -> Finding | None:
    """Every output passes and something fails by more than a narrower type would: the bug
    is in the backward pass. (Gradients off as by TF32 or float16 are ``precision_level``'s.)"""
    outputs = [c for c in report.comparisons if c.name.startswith("output")]
    if not all(c.passed for c in outputs) or report.passed:
        return None
    if max(c.relative_error for c in report.comparisons if not c.passed) < TF32_LEVEL:
        return None
    failing = ", ".join(c.name for c in report.comparisons if not c.passed)
    worst = max(c.ratio for c in outputs)
    return Finding(
        GRADIENTS_ONLY,
        f"a bug only in gradients: the forward pass is exact (worst ratio {worst:.2g}) but "
        f"{failing} are off",
        True,
        worst,
    )


def precision_level(report: ExampleReport) -> Finding | None:
    """Every failing tensor is off by less than PRECISION_LIMIT of its scale: arithmetic
    in a narrower type, not a bug in the structure."""
    failing = [c for c in report.comparisons if not c.passed]
    worst_relative = max(c.relative_error for c in failing)
    if worst_relative >= PRECISION_LIMIT:
        return None
    bits = -math.log2(max(worst_relative, 1e-30))
    cause = (
        f"a precision-level deviation: errors {report.worst().ratio:.3g}x the float32 "
        f"reference's own, yet only {worst_relative:.2g} relative (about {bits:.0f} "
        "correct bits), far below a structural bug: arithmetic in a narrower type, TF32 "
        "(float16's 10 bits, eps 9.8e-4: a GPU's default for float32 convolutions in "
        "PyTorch and matmuls in JAX) or half precision (float16 eps 9.8e-4, bfloat16 "
        "7.8e-3), or a slightly scaled softmax"
    )
    return Finding(PRECISION_LEVEL, cause, True, math.nan)
