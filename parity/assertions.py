"""Parity as an assertion, for pytest and Hypothesis: a failure says what and how to replay."""

from __future__ import annotations

from functools import cache

from parity import registry, replay
from parity.compare import describe_failures
from parity.engine import Checker, ExampleReport
from parity.spec import ModulePair
from parity.strategies import Example


class ParityFailure(AssertionError):
    """The port's error on some tensor exceeds what the tolerance policy allows."""

    def __init__(
        self, report: ExampleReport, pair: ModulePair | None = None, train: str | None = None
    ):
        self.report = report
        super().__init__(
            f"{report.pair}: the port differs from the reference on {report.example}\n"
            + describe_failures(report.comparisons, report.precision)
        )
        if pair is not None:
            replay_line = replay_command(pair, report.example, train, report.precision)
            self.add_note(f"Replay: {replay_line}")


def replay_command(
    pair: ModulePair, example: Example, train: str | None = None, precision: str = "float32"
) -> str:
    """The ``parity check`` command that reruns ``example`` (a training step with ``train``,
    the optimizer's name; on the Keras backend it ran on), or the Python call for what the
    command cannot name: a pair of its own, a mixed-precision ``precision``."""
    if pair.name in registry.names() and precision == "float32":
        return replay.replay_command(pair.name, example, origin=pair.origin, train=train)
    return replay.python_replay(example, train=train, precision=precision)


@cache
def checker_for(pair: ModulePair) -> Checker:
    """One Checker per pair and process, so its modules and layers are reused."""
    return Checker(pair)


def assert_parity(pair: ModulePair, example: Example, *, gradients: bool = True) -> ExampleReport:
    """Check one example; raise ParityFailure if any tensor is off. Returns the report."""
    __tracebackhide__ = True
    return assert_report(checker_for(pair).check(example, gradients=gradients), pair)


def assert_report(
    report: ExampleReport, pair: ModulePair | None = None, train: str | None = None
) -> ExampleReport:
    """Raise ParityFailure for a failing report (from any kind of check)."""
    __tracebackhide__ = True
    if not report.passed:
        raise ParityFailure(report, pair, train)
    return report


@cache
def training_checker_for(pair: ModulePair):
    from parity.training import TrainingChecker

    return TrainingChecker(checker_for(pair))


def assert_training_parity(pair: ModulePair, example: Example, optimizer) -> ExampleReport:
    """One training step (``parity.training``) on one example; ParityFailure if off."""
    __tracebackhide__ = True
    report = training_checker_for(pair).check(example, optimizer)
    return assert_report(report, pair, optimizer.name)
