"""The power of the suite over every registered pair's own planted bugs
(``PairDefinition.planted`` in ``parity/pairs/``): the parity property rejects each, by a
wide margin, and the diagnosis names the bug it was planted as. A port that crashes is not
rejected here: it fails the test."""

import pytest

from parity.core import registry
from parity.core.replay import Origin
from parity.core.spec import with_port
from parity.diagnosis.diagnose import diagnose
from parity.run.assertions import checker_for
from parity.run.driver import Budget, find_counterexample

PLANTED = {
    f"{definition.name}: {bug.name}": (definition, bug)
    for definition in registry.definitions().values()
    for bug in definition.planted()
}


def failing_report(pair):
    """The full check of the shrunk counterexample the driver finds; None if no example
    fails. A port that fails without a wrong tensor (a crash, a weight it cannot hold)
    fails the test."""
    outcome = find_counterexample(checker_for(pair), budget=Budget(examples=50, seed=None))
    if outcome.passed:
        return None
    rejected = outcome.counterexample is not None and outcome.error is None
    assert rejected, f"{pair.name}: not rejected for a wrong tensor: {outcome.failure}"
    return outcome.report


@pytest.mark.parametrize("name", PLANTED)
def test_planted_bug_is_rejected_and_named(name):
    definition, bug = PLANTED[name]
    port = f"{bug.make_port.__module__}:{bug.make_port.__qualname__}"
    pair = with_port(definition.pair, bug.make_port, origin=Origin(port=port))
    report = failing_report(pair)
    assert report is not None, f"{name}: the property never failed"
    policy = checker_for(pair).policy
    assert report.worst().ratio > 100 * policy.factor, report.worst()
    diagnosis = diagnose(checker_for(pair), report.example)
    assert diagnosis.explained, diagnosis.text()
    assert diagnosis.findings[0].hypothesis.key == bug.hypothesis.key, diagnosis.text()


def test_every_registered_pair_ships_a_planted_bug_or_is_covered_elsewhere():
    """The bundled DANet pairs' planted bugs live in tests/power/ (ports.py, head_ports.py,
    and danet_ports.py: the whole network's traps); a new pair brings its own in its file."""
    covered_by_tests_power = {"pam", "cam", "head", "danet"}
    for definition in registry.definitions().values():
        assert definition.planted() or definition.name in covered_by_tests_power, definition.name
