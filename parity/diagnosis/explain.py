"""Why a counterexample fails: the diagnosis' hypotheses (``parity.diagnosis.diagnose``), and, for a
model whose sub-modules the weight map matches, where its forward pass first leaves the
policy (``parity.diagnosis.divergence``), whose trapped layer names the cause when no hypothesis
does.
"""

from __future__ import annotations

from dataclasses import dataclass

from parity.core.errors import PortError
from parity.core.strategies import Example
from parity.diagnosis.diagnose import Diagnosis, diagnose
from parity.diagnosis.divergence import Divergence, locate
from parity.run.engine import Checker


@dataclass(frozen=True)
class Explanation:
    diagnosis: Diagnosis
    divergence: Divergence | None  # None: nothing to locate, or it cannot say


def explain(checker: Checker, example: Example, *, crashed: bool) -> Explanation:
    """The diagnosis of ``example``; where a wrong result first appears (a crash has none to
    locate), and the trap found there as the cause when no hypothesis explains the failure
    (the reference with that layer trapped computes what the port computes)."""
    diagnosis = diagnose(checker, example)
    divergence = None if crashed else first_divergence(checker, example)
    trapped = divergence.first if divergence is not None else None
    if not diagnosis.explained and trapped is not None and trapped.trap is not None:
        diagnosis = Diagnosis(
            True,
            f"{trapped.trap.cause}, at {trapped.trap_module} (the reference with that "
            "layer trapped computes what the port computes there, within the policy)",
            diagnosis.findings,
        )
    return Explanation(diagnosis, divergence)


def first_divergence(checker: Checker, example: Example) -> Divergence | None:
    """Where the port's forward pass first leaves the policy, for a model whose sub-modules
    the weight map matches; None where it cannot say (a tf.keras 2 port, a port that fails
    only in its gradients, one sub-module or none)."""
    try:
        divergence = locate(checker, example)
    except (PortError, AttributeError):  # AttributeError: a layer without Keras 3's tracking
        return None
    if divergence.first is None or len(divergence.modules) < 2:
        return None
    return divergence
