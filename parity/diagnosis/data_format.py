"""A port that fails in the data format it was checked in, tried in the other one: a
faithful channels-first port checked as channels-last fails on every tensor, and no bug
hypothesis explains that; passing in the other layout does, and says which flag to add.
"""

from __future__ import annotations

from dataclasses import replace

from parity.core.errors import CannotCheck, PortError
from parity.run.driver import Budget, find_counterexample
from parity.run.engine import Checker

OTHER = {"channels_last": "channels_first", "channels_first": "channels_last"}
TRIAL_EXAMPLES = 10
"""Examples the other layout must pass: a port that merely survives it on a few shapes
(a square input read either way) is not said to read it."""


def passing_data_format(checker: Checker, procedure, seed: int | None = 0):
    """The other data format and the example it passed on worst, where the port passes
    in it on TRIAL_EXAMPLES examples; else None. For a port of the user's: the bundled
    ones declare their layout."""
    pair = checker.pair
    other = OTHER[pair.data_format]
    trial = replace(pair, data_format=other, origin=replace(pair.origin, data_format=other))
    budget = Budget(examples=TRIAL_EXAMPLES, seed=seed, shrink=False, confirm=False)
    try:
        outcome = find_counterexample(
            Checker(trial, checker.policy, checker.mode, checker.precision), procedure, budget
        )
    except (PortError, CannotCheck):  # crashes, or cannot even be built or bound that way
        return None
    if not outcome.passed or outcome.examples_run < TRIAL_EXAMPLES:
        return None
    return trial, outcome.worst_example
