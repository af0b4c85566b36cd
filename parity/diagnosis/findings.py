"""What the diagnosis found, and how it is said.

A ``Finding`` is one hypothesis tested against the failing examples; a ``Diagnosis`` is
the conclusion drawn from them. The wording of conclusions lives here, in one place:
tests and users read these sentences.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from parity.core.hypotheses import GRADIENTS_ONLY, Hypothesis, same


@dataclass
class Finding:
    hypothesis: Hypothesis
    cause: str
    explains: bool
    residual: float  # worst ratio of the port against this hypothesis' prediction
    suggestion: str = ""
    explains_failing_example: bool = False  # on the counterexample itself, not the richer one
    composed: bool = False  # two known bugs at once

    def as_dict(self):
        return {
            "hypothesis": self.hypothesis.name,
            "id": self.hypothesis.key,
            "cause": self.cause,
            "explains": self.explains,
            "residual_ratio": None if not math.isfinite(self.residual) else self.residual,
            "suggestion": self.suggestion or None,
        }


@dataclass
class Diagnosis:
    explained: bool
    cause: str
    findings: list[Finding] = field(default_factory=list)
    suggestion: str = ""
    restates_error: bool = False  # the cause is the port's own error message, no more

    def text(self) -> str:
        lines = [
            f"Diagnosis: {self.cause}"
            if self.explained
            else f"Diagnosis: unexplained. {self.cause}"
        ]
        if self.suggestion:
            lines.append(self.suggestion)
        return "\n".join(lines)

    def as_dict(self):
        return {
            "explained": self.explained,
            "cause": self.cause,
            "suggestion": self.suggestion or None,
            "hypotheses": [f.as_dict() for f in self.findings],
        }


def finding(
    hypothesis: Hypothesis, cause: str, results: list[tuple[bool, float]], suggestion: str = ""
) -> Finding:
    """A hypothesis tried on each failing example (``results``: (matches, worst ratio)):
    it explains the failure only if it explains every example."""
    explains = all(ok for ok, _ in results)
    residual = max(r for _, r in results)
    return Finding(
        hypothesis, cause, explains, residual, suggestion if explains else "", results[0][0]
    )


def merge_same_numbers(swap, findings: list[Finding]) -> list[Finding]:
    """Swapped roles in the math (``swap.variant``) and swapped names (``swap``) predict the
    same numbers: one finding, under the variant, with the names' cause and weight map."""
    if swap.variant is None:
        return findings
    math_swap = next((f for f in findings if same(f.hypothesis, swap.variant)), None)
    name_swap = next((f for f in findings if same(f.hypothesis, swap)), None)
    if not (math_swap and name_swap and math_swap.explains and name_swap.explains):
        return findings
    merged = Finding(
        swap.variant,
        name_swap.cause,
        True,
        min(math_swap.residual, name_swap.residual),
        name_swap.suggestion,
    )
    rest = [f for f in findings if f not in (math_swap, name_swap)]
    return [merged, *rest]


def explained(explaining: list[Finding], reference_ratio: float, findings) -> Diagnosis:
    """The best explaining finding as the cause, how closely the port matches it, and the
    other hypotheses that explain it too."""
    best = explaining[0]
    cause = best.cause
    if math.isfinite(best.residual) and not same(best.hypothesis, GRADIENTS_ONLY):
        cause += (
            f" (the port matches this to {best.residual:.2g}x float32 noise, against "
            f"{reference_ratio:.2g}x for the reference)"
        )
    others = [f.hypothesis.name for f in explaining[1:]]
    if others:
        cause += f"; also consistent with: {', '.join(others)}"
    return Diagnosis(True, cause, findings, best.suggestion)


CLEARLY_CLOSER = 10.0
"""A hypothesis that does not explain a failure is shown as "closest" only when the port is
this many times nearer its prediction than the reference: a hypothesis that changes nothing
on the example (an H/W kernel transpose on 1x1 kernels) is as far as the reference is."""


def unexplained(findings: list[Finding], examples: int, reference_ratio: float) -> str:
    """The single hypotheses clearly closer to the port than the reference, with their
    residuals; those that explain the failing example but not the richer one; how many
    combinations of known bugs were tried."""
    singles = [f for f in findings if math.isfinite(f.residual) and not f.composed]
    if not singles:
        return "no named hypothesis applies to this module"
    close = [f for f in singles if f.residual * CLEARLY_CLOSER <= reference_ratio]
    if close:
        text = "no named hypothesis explains it; closest: " + ", ".join(
            f"{f.hypothesis.name} ({f.residual:.2g}x)" for f in close[:3]
        )
    else:
        text = (
            f"no named hypothesis explains it, nor comes {CLEARLY_CLOSER:g}x closer to the "
            f"port than the reference ({reference_ratio:.2g}x)"
        )
    partial = [f.hypothesis.name for f in singles if f.explains_failing_example]
    if partial and examples > 1:
        text += (
            f"; {', '.join(partial)} explains the failing example but not a richer one "
            "(batch 2, H != W): another bug is there too"
        )
    combined = [f for f in findings if f.composed]
    if combined:
        text += f"; no pair or triple of known bugs explains it either ({len(combined)} tried)"
    return text
