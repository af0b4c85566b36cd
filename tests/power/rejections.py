"""What a planted bug must be rejected for.

A check that fails for another reason than the bug (the harness crashed, the converter
refused the weights, a tensor the bug cannot touch is off) has not seen the bug: counting
it as power would let a broken harness pass the power tests. Each planted bug declares its
rejection, and the power tests accept that one only, judged on the driver's outcome
(``parity.run.driver.Outcome``): its confirmed counterexample and its failure.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from parity.core.errors import PortError
from parity.run.driver import Outcome


@dataclass(frozen=True)
class ParityFailureOn:
    """A ParityFailure (some tensor off by more than the tolerance policy allows) on the
    tensors the bug touches: for each entry of ``fails``, a failing tensor whose name
    contains it; no failing tensor whose name contains an entry of ``passes`` (tensors the
    bug leaves exact, such as the output for a bug in the backward pass). An empty
    ``fails`` accepts any failing tensor: a bug in the attention reaches every one.
    ``any_of``: one entry of ``fails`` is enough (at float16 and bfloat16 the wider floor
    hides the tensors a bug moves least; ``at_low_precision``)."""

    fails: tuple[str, ...] = ()
    passes: tuple[str, ...] = ()
    any_of: bool = False

    def at_low_precision(self) -> ParityFailureOn:
        return replace(self, any_of=True)

    def mismatch(self, outcome: Outcome) -> str | None:
        """None if ``outcome`` is this rejection; otherwise what differs."""
        if outcome.error is not None:
            return f"expected a wrong tensor, got {type(outcome.error).__name__}"
        if outcome.counterexample is None or outcome.report is None:
            return f"expected a counterexample with a wrong tensor, got: {outcome.failure}"
        failing = [c.name for c in outcome.report.comparisons if not c.passed]
        if not failing:
            return "the counterexample passes when checked in full"
        missing = [part for part in self.fails if not any(part in name for name in failing)]
        if self.any_of and len(missing) < len(self.fails):
            missing = []
        spared = [name for name in failing if any(part in name for part in self.passes)]
        if missing or spared:
            return (
                f"expected failures on {list(self.fails)} and none on {list(self.passes)}; "
                f"failing: {failing}"
            )
        return None


@dataclass(frozen=True)
class Raises:
    """A PortError of this type (exactly; a subclass is another failure): for the bugs
    that are shape bugs, where no comparison can run."""

    error: type[PortError]

    def at_low_precision(self) -> Raises:
        return self

    def mismatch(self, outcome: Outcome) -> str | None:
        if type(outcome.error) is self.error:
            return None
        got = type(outcome.error).__name__ if outcome.error is not None else "no port error"
        return f"expected {self.error.__name__}, got {got}"


Rejection = ParityFailureOn | Raises
