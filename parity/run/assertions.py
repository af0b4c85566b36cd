"""Parity as an assertion, for pytest and Hypothesis: a failure says what and how to replay."""

from __future__ import annotations

from functools import cache

from parity.core.errors import ParityFailure
from parity.core.policy import DEFAULT_POLICY, TolerancePolicy
from parity.core.spec import ModulePair
from parity.core.strategies import Example
from parity.run.engine import Checker, ExampleReport


@cache
def checker_for(pair: ModulePair, policy: TolerancePolicy = DEFAULT_POLICY) -> Checker:
    """One Checker per pair, policy and process, so its modules and layers are reused."""
    return Checker(pair, policy)


def assert_parity(
    pair: ModulePair,
    example: Example,
    *,
    gradients: bool = True,
    policy: TolerancePolicy = DEFAULT_POLICY,
) -> ExampleReport:
    """Check one example; raise ParityFailure if any tensor is off. Returns the report."""
    __tracebackhide__ = True
    return assert_report(checker_for(pair, policy).check(example, gradients=gradients), pair)


def assert_report(
    report: ExampleReport, pair: ModulePair | None = None, train: str | None = None
) -> ExampleReport:
    """Raise ParityFailure for a failing report (from any kind of check)."""
    __tracebackhide__ = True
    if not report.passed:
        raise ParityFailure(report, pair, train)
    return report


@cache
def training_checker_for(pair: ModulePair, policy: TolerancePolicy = DEFAULT_POLICY):
    from parity.run.training import TrainingChecker

    return TrainingChecker(checker_for(pair, policy))


def assert_training_parity(pair: ModulePair, example: Example, optimizer) -> ExampleReport:
    """One training step (``parity.run.training``) on one example; ParityFailure if off."""
    __tracebackhide__ = True
    report = training_checker_for(pair).check(example, optimizer)
    return assert_report(report, pair, optimizer.name)
