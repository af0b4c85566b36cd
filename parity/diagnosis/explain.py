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
from parity.diagnosis.localize import Localization, localize
from parity.run.engine import Checker


@dataclass(frozen=True)
class Explanation:
    diagnosis: Diagnosis
    divergence: Divergence | None  # None: nothing to locate, or it cannot say
    localization: Localization | None = None  # the first line of forward the port misses
    localization_note: str | None = None  # why there is none, where that needs saying

    def lines(self) -> list[str]:
        """What is printed after the failure: the diagnosis, where inside the module it first
        goes wrong, and, where that is not said or a trap was found there, the first
        sub-module whose output diverges (a sub-module is a coarser place: a CBAM whose
        channel attention drops a branch first diverges at the spatial attention's
        convolution, after the line that dropped it)."""
        lines = [] if self.diagnosis.restates_error else [self.diagnosis.text()]
        trapped = self.divergence is not None and self.divergence.first.trap is not None
        if self.divergence is not None and (trapped or self.localization is None):
            lines.append(self.divergence.describe())
        if self.localization is not None:
            lines.append(self.localization.describe())
        elif self.localization_note:
            lines.append(self.localization_note)
        return lines


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
    if crashed:
        return Explanation(diagnosis, divergence)
    localization, note = localized(checker, example)
    return Explanation(diagnosis, divergence, localization, note)


def localized(checker: Checker, example: Example) -> tuple[Localization | None, str | None]:
    """``localize``'s answer, or why there is none: another backend, or a port that cannot
    be traced into a graph (it runs eagerly only) or crashes on the localization example."""
    try:
        found = localize(checker, example)
    except Exception as error:  # the port's own code, traced: any error it can raise
        first_line = (str(error).splitlines() or [""])[0][:200]
        return None, (
            "Where it first goes wrong: not localized: the port could not be traced into a "
            f"graph on the localization example ({type(error).__name__}: {first_line})"
        )
    if found is None:
        backend = checker.framework.backend
        if backend != "tensorflow":
            return None, (
                "Where it first goes wrong: not localized on Keras' "
                f"{backend} backend (the TensorFlow backend lists every tensor of the port)"
            )
        return None, None
    return found, None


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
