"""The counterexample driver: one module pair, one procedure, a budget of examples.

It builds the port once (a port that cannot hold the weights fails before any example),
searches examples with Hypothesis (or checks the one example given), shrinks a failure to a
minimal counterexample, checks that counterexample in full, and confirms that it fails again
when checked alone, as its replay command checks it. The answer is an ``Outcome``: the
counterexample, the failure, and per tensor the worst comparison seen.

The ``parity`` command, the power tests and the mixed-precision tests run their examples
through ``find_counterexample``; they differ only in the procedure (evaluation mode, or
one training step: ``TrainingStep``), the checker (a precision) and the budget.

Frameworks are imported on first use: ``parity.frontends.cli.main`` imports this module before
answering a usage error.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from parity.backends.quiet import softmax_over_one_expected
from parity.core import registry

if TYPE_CHECKING:
    from parity.core.errors import PortError
    from parity.core.strategies import Example
    from parity.run.engine import Checker, ExampleReport

DEFAULT_EXAMPLES = 100
"""Examples per pair when neither the caller nor the pair's registration says otherwise."""


def examples_for(pair, requested: int | None = None) -> int:
    """``requested``, else the registered pair's own count, else DEFAULT_EXAMPLES."""
    if requested is not None:
        return requested
    known = pair.name in registry.names()
    return (known and registry.definition(pair.name).examples) or DEFAULT_EXAMPLES


# -- procedures: what one example's check runs ---------------------------------------------------


class Procedure(Protocol):
    """What checking one example means; ``train`` names it in a replay command."""

    train: str | None

    def examples(self, pair): ...

    def check(
        self, checker: Checker, example: Example, *, forward_first: bool = False, keep: bool = False
    ) -> ExampleReport: ...


@dataclass(frozen=True)
class Evaluation:
    """The port in evaluation mode: its outputs and (``gradients``) every gradient
    (``Checker.check``)."""

    train: str | None = None
    gradients: bool = True

    def examples(self, pair):
        return pair.examples()

    def check(self, checker, example, *, forward_first=False, keep=False):
        return checker.check(
            example, gradients=self.gradients, forward_first=forward_first, keep=keep
        )


@dataclass(frozen=True)
class TrainingStep:
    """One training step with the optimizer named ``train`` (``parity.run.training``), on the
    examples BatchNorm can train on."""

    train: str

    def examples(self, pair):
        from parity.run.training import trainable

        return pair.examples().filter(trainable)

    def check(self, checker, example, *, forward_first=False, keep=False):
        from parity.core.optimizers import OPTIMIZERS
        from parity.run.training import TrainingChecker

        return TrainingChecker(checker).check(example, OPTIMIZERS[self.train])


def procedure_for(train: str | None) -> Procedure:
    """Evaluation, or a training step with the optimizer named ``train``."""
    return TrainingStep(train) if train else Evaluation()


# -- budgets and outcomes ------------------------------------------------------------------------


@dataclass(frozen=True)
class Budget:
    """How many examples, from which seed; or one example given (``example``: checked as
    is, nothing searched, shrunk or confirmed).

    ``seed`` None: Hypothesis' loaded profile decides (a test suite's derandomized CI
    profile). ``shrink`` False: stop at the first failing example, as a power test that
    asks only whether the bug is seen. ``confirm`` False: skip the replay of the
    counterexample on a fresh checker."""

    examples: int = DEFAULT_EXAMPLES
    seed: int | None = 0
    example: Example | None = None
    shrink: bool = True
    confirm: bool = True


class Listener(Protocol):
    """Told of the search's progress (the command's progress line)."""

    def tick(self) -> None: ...

    def shrinking(self) -> None: ...


@dataclass
class Outcome:
    """What the examples of one pair showed.

    ``counterexample``: the minimal failing example (None: none failed, none replayed, or
    the port failed before any example); ``error``: the PortError the port raised (a crash,
    an output of the wrong shape, weights it cannot hold) and ``failure`` its one-line text,
    or the reason for a failure without a wrong tensor; ``report``: the full check of the
    counterexample; ``unconfirmed``: a counterexample that passed when checked alone (its
    failure depended on what ran before it). Per tensor, ``worst`` holds the worst
    comparison over the passing examples and the counterexample."""

    module: str
    examples_run: int = 0
    worst: dict = field(default_factory=dict)  # tensor name -> TensorComparison
    worst_example: Example | None = None
    worst_ratio: float = -1.0
    counterexample: Example | None = None
    failure: str = ""
    error: PortError | None = None
    report: ExampleReport | None = None  # of the counterexample (or the worst example)
    unconfirmed: Example | None = None

    @property
    def passed(self) -> bool:
        return self.counterexample is None and not self.failure

    @property
    def failed_on(self) -> Example | None:
        """The example that failed in the search, confirmed or not."""
        return self.counterexample or self.unconfirmed

    def add(self, report):
        """A passing example."""
        self.examples_run += 1
        self.tally(report.comparisons)
        if report.worst().ratio > self.worst_ratio:
            self.worst_ratio, self.worst_example = report.worst().ratio, report.example

    def tally(self, comparisons):
        for c in comparisons:
            if c.name not in self.worst or c.ratio > self.worst[c.name].ratio:
                self.worst[c.name] = c

    def fail(self, example: Example | None, error: PortError) -> None:
        self.counterexample, self.error, self.failure = example, error, str(error)


# -- the driver --------------------------------------------------------------------------------


def find_counterexample(
    checker: Checker,
    procedure: Procedure | None = None,
    budget: Budget | None = None,
    *,
    listener: Listener | None = None,
    before_each: Callable[[], None] | None = None,
) -> Outcome:
    """Check ``checker``'s pair with ``procedure`` (default: evaluation) within ``budget``.

    ``before_each`` runs before every example, shrinking included (the command checks
    for Ctrl-C there). A port that cannot be loaded (PortLoadError) or a weight map that
    does not fit it (WeightMapError): any CannotCheck propagates. Keras' warning of a softmax
    over one position (PAM on a 1x1 map) is expected here and silenced."""
    with softmax_over_one_expected():
        return _find(checker, procedure or Evaluation(), budget or Budget(), listener, before_each)


def _find(checker, procedure, budget, listener, before_each) -> Outcome:
    outcome = Outcome(checker.pair.name)
    preflight(checker, outcome)
    if not outcome.failure:
        _search(checker, procedure, budget, outcome, listener, before_each)
    if outcome.passed:  # what the port lacks fails it, however well the rest matches
        failures = [untracked_failure(checker, outcome)] if checker.untracked else []
        failures += [absent_failure(checker, outcome)] if checker.undeclared_absent else []
        outcome.failure = "\n".join(failures)
    if outcome.counterexample is not None and not outcome.failure:
        # Every tensor of the counterexample, gradients included (the search may have
        # stopped at a failing forward pass): the tally and the report agree.
        outcome.report = procedure.check(checker, outcome.counterexample, keep=True)
        outcome.tally(outcome.report.comparisons)
    if budget.example is None and budget.confirm and outcome.counterexample is not None:
        _confirm(checker, procedure, outcome)
    return outcome


SLOW_SHRINK = "spent more than five minutes working to shrink"
"""What Hypothesis says when it gives up shrinking (an example of the full-width DANet
costs tens of seconds): said to the user as SHRINK_STOPPED, not as Hypothesis' plea."""
SHRINK_STOPPED = (
    "shrinking stopped at Hypothesis' five-minute limit: the counterexample is the smallest "
    "found by then, not necessarily the smallest there is"
)


def _search(checker, procedure, budget, outcome, listener, before_each) -> None:
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hypothesis_seed
    from hypothesis.reporting import with_reporter

    from parity.core.errors import ParityFailure, PortError

    failed = []
    raised: list[tuple[Example, PortError]] = []

    def check(example):
        if before_each is not None:
            before_each()
        try:
            report = procedure.check(checker, example, forward_first=bool(failed))
        except PortError as error:
            raised.append((example, error))
            raise
        if not report.passed:
            raise ParityFailure(report)
        return report

    if budget.example is not None:
        try:
            outcome.add(check(budget.example))
        except ParityFailure:
            outcome.counterexample = budget.example
        except PortError as error:
            outcome.fail(budget.example, error)
        return

    chosen = settings(
        max_examples=budget.examples,
        database=None,
        deadline=None,
        **({"derandomize": False} if budget.seed is not None else {}),
        report_multiple_bugs=False,
        # No explain phase: it reruns the failure a hundred times to say which argument
        # could vary; the diagnosis says more, for a fraction of that.
        phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target]
        + ([Phase.shrink] if budget.shrink else []),
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )

    @chosen
    @given(procedure.examples(checker.pair))
    def parity_property(example):
        if not failed and listener is not None:
            listener.tick()
        try:
            report = check(example)
        except (ParityFailure, PortError):
            if not failed:
                failed.append(True)
                if listener is not None:
                    listener.shrinking()
            raise
        if not failed:  # the examples passed while shrinking are not the run's
            outcome.add(report)

    if budget.seed is not None:
        parity_property = hypothesis_seed(budget.seed)(parity_property)
    said: list[str] = []  # Hypothesis' own reports: the command prints its own
    try:
        with with_reporter(said.append):
            parity_property()
    except ParityFailure as failure:
        outcome.counterexample = failure.report.example
    except PortError as error:
        example = next((e for e, raised_error in reversed(raised) if raised_error is error), None)
        outcome.fail(example, error)
    finally:
        if any(SLOW_SHRINK in str(text) for text in said) and SHRINK_STOPPED not in checker.notes:
            checker.notes.append(SHRINK_STOPPED)


def preflight(checker: Checker, outcome: Outcome) -> None:
    """Build the port once and bind its weights before any example: a port that cannot
    hold the weights fails the same way on every example, so there is nothing to shrink;
    a bad weight map is a usage error."""
    from parity.core.errors import PortCrashed, PortError

    example = checker.pair.richer_example()
    try:
        checker.bindings(checker.port_for(example), example.channels)
    except PortCrashed:  # a crash: the examples find its minimal shape
        pass
    except PortError as error:  # weights it cannot hold: no shape is involved
        outcome.fail(None, error)


def replays(checker: Checker, procedure: Procedure, example: Example) -> bool:
    """Whether ``example`` fails when checked as its replay command checks it: a fresh
    checker like ``checker``, the port built on the preflight shape first, then the
    example alone."""
    from parity.core.errors import PortError

    fresh = checker.fresh()
    preflight(fresh, Outcome(checker.pair.name))
    try:
        return not procedure.check(fresh, example).passed
    except PortError:
        return True


def _confirm(checker, procedure, outcome: Outcome) -> None:
    """A counterexample is one only if it fails alone: otherwise it is reported as
    state kept between calls, with no counterexample."""
    example = outcome.counterexample
    if replays(checker, procedure, example):
        return
    outcome.counterexample, outcome.unconfirmed, outcome.error = None, example, None
    outcome.failure = (
        f"the port failed on {example.to_text()} after other examples, and passes when "
        "that example is checked alone: its result depends on what it ran before "
        "(state kept between calls)"
    )


def untracked_failure(checker: Checker, outcome: Outcome) -> str:
    """Why a port that keeps parameters in variables its framework does not track fails
    though the rest may match."""
    held = ", ".join(f"{key} in {name} {shape}" for key, name, shape in checker.untracked)
    judged = (
        f"With the reference's values assigned to them, the port matches the reference on "
        f"{outcome.examples_run} examples"
        if outcome.counterexample is None
        else "The rest was checked with the reference's values assigned to them (a port "
        "written as a function captures them when traced and computes with its own: the "
        "diagnosis then says what it computes)"
    )
    return (
        f"a parameter that is not a tracked weight: the port keeps {held}, a variable Keras "
        "does not track (a bare tf.Variable), so it is neither saved, loaded nor trained "
        f"with the layer; create it with add_weight() in build(). {judged}"
    )


def absent_failure(checker: Checker, outcome: Outcome) -> str:
    """Why a port that lacks reference parameters fails though the rest may match."""
    absent = checker.undeclared_absent
    judged = (
        f"with them held at zero in the reference, the rest of the port matches it on "
        f"{outcome.examples_run} examples"
        if outcome.counterexample is None
        else "the rest was checked with them held at zero in the reference"
    )
    example = {absent[0]: None}
    flags = " ".join(f"--absent {key}" for key in absent)
    return (
        f"the port has no counterpart for {', '.join(absent)} (use_bias=False?); {judged}. "
        f"If it has none on purpose, declare it: {flags}, or null in the weight map "
        f"({json.dumps(example)})"
    )
