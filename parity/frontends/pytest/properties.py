"""The parity properties: the port matches the reference, outputs and every gradient (input
and each parameter), across random shapes, scales and weights.

pytest runs them against your port with ``pytest --parity-port MODULE:FACTORY`` (the plugin,
``parity.frontends.pytest.plugin``), the project's own suite against the bundled ports
(``tests/test_parity.py``), and ``check_port`` runs them from a test of your own::

    from parity import check_port

    def test_my_pam_matches_danet():
        check_port("my_port:make_pam")

Each property is one run of the driver (``parity.run.driver.find_counterexample``), as
``parity check`` and the power tests run it: the loaded Hypothesis profile's examples (the
plugin derives one from ``--parity-examples``), a failure shrunk to a minimal
counterexample, checked in full, confirmed to fail alone, and raised with the command that
replays it.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

from hypothesis import settings

from parity.backends.ports import detect_module, pair_for_port
from parity.core import registry
from parity.core.errors import ParityFailure, PortError
from parity.core.policy import DEFAULT_POLICY, TolerancePolicy
from parity.core.replay import Origin
from parity.core.spec import ModulePair, channels_first, with_port
from parity.core.weight_map import read_weight_map
from parity.run.assertions import checker_for
from parity.run.driver import Budget, Evaluation, Outcome, Procedure, find_counterexample

CHECKED: set[tuple[str, str]] = set()
"""(port, module) of every ``check_port`` call in this process: the plugin lists them."""


def run_property(
    pair: ModulePair,
    procedure: Procedure | None = None,
    *,
    examples: int | None = None,
    policy: TolerancePolicy = DEFAULT_POLICY,
) -> Outcome:
    """The driver on ``pair`` with ``procedure`` (default: outputs and every gradient), for
    ``examples`` examples (default: the loaded profile's, drawn as it draws them). Returns
    the outcome when parity holds; raises the failure otherwise: a ParityFailure with its
    replay command, or the PortError the port raised."""
    __tracebackhide__ = True
    budget = Budget(examples=examples or settings().max_examples, seed=None)
    outcome = find_counterexample(checker_for(pair, policy), procedure, budget)
    if outcome.passed:
        return outcome
    train = getattr(procedure, "train", None)
    if outcome.report is not None and not outcome.report.passed:
        raise ParityFailure(outcome.report, pair, train)
    if outcome.error is not None:
        raise outcome.error
    raise PortError(outcome.failure)


@cache
def pairs_under_test(
    port: str | None, weight_map: str | None = None, data_format: str | None = None
) -> tuple[ModulePair, ...]:
    """Every registered pair's bundled ports (both data formats, and the other ports a pair
    bundles, such as the chunked PAM) but those with an example count of their own, or the
    port named by ``[NAME=]MODULE:FACTORY`` (its
    module detected when not named)."""
    if port is None:  # pairs whose examples cost seconds run in tests of their own
        definitions = [d for d in registry.definitions().values() if d.examples is None]
        bundled = [d.pair for d in definitions] + [p for d in definitions for p in d.more_ports()]
        return tuple(pair for p in bundled for pair in (p, channels_first(p)))
    mapping = read_weight_map(weight_map) if weight_map else None
    origin = Origin(port=port.split("=")[-1], weight_map=weight_map, data_format=data_format)
    return (pair_for_port(port, weight_map=mapping, data_format=data_format, origin=origin),)


def test_outputs_match_reference(parity_pair):
    run_property(parity_pair, Evaluation(gradients=False))


def test_gradients_match_reference(parity_pair):
    """Gradients w.r.t. the input and every parameter, for a random cotangent."""
    outcome = run_property(parity_pair)
    channels = outcome.worst_example.channels
    parameters = dict(parity_pair.make_reference(channels).named_parameters())
    assert set(outcome.worst) >= {"grad[input]"} | {f"grad[{name}]" for name in parameters}


PROPERTIES = (test_outputs_match_reference, test_gradients_match_reference)


def check_port(
    port: str | Callable,
    module: str | None = None,
    *,
    examples: int | None = None,
    weight_map: dict[str, str] | None = None,
    data_format: str | None = None,
    policy: TolerancePolicy = DEFAULT_POLICY,
) -> Outcome:
    """Run the parity property (outputs and every gradient) against ``port``: a
    ``MODULE:FACTORY`` string or the factory itself. ``module`` (a registered pair's
    name: ``parity.core.registry.names()``) is detected from the port's weights when not
    given; ``policy``: the tolerance policy (its factor goes into the replay command).
    Raises ParityFailure (an AssertionError) on the minimal counterexample, with a
    ``parity check`` replay command; returns the driver's outcome when parity holds."""
    __tracebackhide__ = True
    factor = None if policy.factor == DEFAULT_POLICY.factor else policy.factor
    if isinstance(port, str):
        target = f"{module}={port}" if module else port
        origin = Origin(port=target.split("=")[-1], data_format=data_format, factor=factor)
        pair = pair_for_port(target, weight_map=weight_map, data_format=data_format, origin=origin)
    else:
        fmt = data_format or "channels_last"
        base = registry.pair(module or detect_module(port, fmt))
        origin = Origin(port=f"{port.__module__}:{port.__qualname__}", factor=factor)
        pair = with_port(base, port, weight_map=weight_map, data_format=data_format, origin=origin)
    CHECKED.add((origin.port, pair.name))
    return run_property(pair, examples=examples, policy=policy)
