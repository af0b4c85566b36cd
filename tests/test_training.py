"""Training mode: BatchNorm on batch statistics and one optimizer step match the reference.

Dropout is off on both sides (see parity.training); every parameter after the step and
every BatchNorm running statistic after the batch are compared, with the outputs and loss.
"""

import pytest
from hypothesis import given, settings

from parity.assertions import assert_training_parity
from parity.spec import HEAD
from parity.training import OPTIMIZERS, trainable

# BatchNorm needs two values per channel to train on.
TRAINING_EXAMPLES = HEAD.examples().filter(trainable)
TRAINING_SHARE = 4
"""A training example costs about four evaluation examples: the properties run a quarter of
the profile's examples (25 in ci, 250 in thorough)."""


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
@given(example=TRAINING_EXAMPLES)
@settings(max_examples=max(10, settings().max_examples // TRAINING_SHARE))
def test_one_training_step_matches_reference(optimizer, example):
    report = assert_training_parity(HEAD, example, OPTIMIZERS[optimizer])
    names = {c.name for c in report.comparisons}
    assert {"loss", "after[conv5a.1.running_var]", "after[sa.gamma]"} <= names
