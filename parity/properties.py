"""The parity properties: the port matches the reference, outputs and every gradient (input
and each parameter), across random shapes, scales and weights.

pytest runs them against your port with ``pytest --parity-port MODULE:FACTORY`` (the plugin,
``parity.pytest_plugin``), the project's own suite against the bundled ports
(``tests/test_parity.py``), and ``check_port`` runs them from a test of your own::

    from parity.properties import check_port

    def test_my_pam_matches_danet():
        check_port("my_port:make_pam")

Import this module only once Hypothesis' profile is loaded (at collection): the tests'
settings derive from it.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from functools import cache

import pytest
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st

from parity import registry
from parity.assertions import assert_parity
from parity.replay import Origin
from parity.spec import ModulePair, channels_first, detect_module, pair_for_port, with_port
from parity.weight_map import read_weight_map

EXAMPLES_ENV = "DANET_PARITY_EXAMPLES"
"""Examples per property (default: the Hypothesis profile's); ``--parity-examples`` sets it."""

SOFTMAX_OVER_ONE = "ignore:You are using a softmax over axis"
"""PAM on a 1x1 map takes a softmax over one position: expected, not a bug."""


def property_settings() -> settings:
    """The loaded profile, without a deadline (the first call of a Keras layer traces), with
    the example count from DANET_PARITY_EXAMPLES if set."""
    examples = os.environ.get(EXAMPLES_ENV)
    return settings(
        deadline=None,
        # No explain phase: it reruns a failure a hundred times to say which argument could
        # vary, where the replay command and the diagnosis say more.
        phases=[phase for phase in Phase if phase is not Phase.explain],
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        **({"max_examples": int(examples)} if examples else {}),
    )


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


def draw_example(data, pair):
    example = data.draw(pair.examples(), label="example")
    event(f"batch {'>= 2' if example.batch >= 2 else '1'}")
    event(f"H*W {'off' if (example.height * example.width) % 8 else 'on'} multiples of 8")
    return example


@pytest.mark.filterwarnings(SOFTMAX_OVER_ONE)
@property_settings()
@given(data=st.data())
def test_outputs_match_reference(parity_pair, data):
    assert_parity(parity_pair, draw_example(data, parity_pair), gradients=False)


@pytest.mark.filterwarnings(SOFTMAX_OVER_ONE)
@property_settings()
@given(data=st.data())
def test_gradients_match_reference(parity_pair, data):
    """Gradients w.r.t. the input and every parameter, for a random cotangent."""
    example = draw_example(data, parity_pair)
    report = assert_parity(parity_pair, example, gradients=True)
    parameters = dict(parity_pair.make_reference(example.channels).named_parameters())
    assert {c.name for c in report.comparisons} >= {"grad[input]"} | {
        f"grad[{name}]" for name in parameters
    }


PROPERTIES = (test_outputs_match_reference, test_gradients_match_reference)


def check_port(
    port: str | Callable,
    module: str | None = None,
    *,
    examples: int | None = None,
    weight_map: dict[str, str] | None = None,
    data_format: str | None = None,
) -> None:
    """Run the parity property (outputs and every gradient) against ``port``: a
    ``MODULE:FACTORY`` string or the factory itself. ``module`` (a registered pair's
    name: ``parity.registry.names()``) is detected from the port's weights when not given.
    Raises ParityFailure (an AssertionError) on the minimal counterexample, with a
    ``parity check`` replay command."""
    __tracebackhide__ = True
    if isinstance(port, str):
        target = f"{module}={port}" if module else port
        pair = pair_for_port(target, weight_map=weight_map, data_format=data_format)
    else:
        fmt = data_format or "channels_last"
        base = registry.pair(module or detect_module(port, fmt))
        origin = Origin(port=f"{port.__module__}:{port.__qualname__}")
        pair = with_port(base, port, weight_map=weight_map, data_format=data_format, origin=origin)
    chosen = property_settings()

    @settings(chosen, max_examples=examples or chosen.max_examples)
    @given(pair.examples())
    def parity_holds(example):
        assert_parity(pair, example)

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="You are using a softmax over axis")
        parity_holds()
