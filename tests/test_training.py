"""Training mode: BatchNorm on batch statistics and one optimizer step match the reference.

Dropout is off on both sides (see parity.run.training); every parameter after the step and
every BatchNorm running statistic after the batch are compared, with the outputs and loss.
"""

from dataclasses import replace

import pytest
from hypothesis import given, settings

from parity.core import registry
from parity.core.optimizers import OPTIMIZERS, SGD
from parity.core.replay import Origin
from parity.core.strategies import Example
from parity.run.assertions import assert_training_parity
from parity.run.training import trainable
from tests.power.head_ports import HeadTrainingFromContext, HeadTrainingNotPassedOn

CAM = registry.pair("cam")
HEAD = registry.pair("head")
PAM = registry.pair("pam")

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


@pytest.mark.parametrize("pair", [PAM, CAM], ids=lambda pair: pair.name)
def test_a_module_whose_call_takes_no_training_argument_trains(pair):
    """Keras drops ``training`` for such a ``call`` (on JAX, ``Layer.stateless_call`` passed
    it on: the bundled PAM and CAM crashed every training step there)."""
    assert_training_parity(pair, Example(2, 8, 3, 2, 1.0, 0), SGD)


@pytest.mark.parametrize("port", [HeadTrainingFromContext, HeadTrainingNotPassedOn])
def test_a_head_that_leaves_training_to_keras_trains_like_the_reference(port):
    """Keras gives ``training`` to the layers a call calls (on JAX, ``Layer.stateless_call``
    crashed the first and ran the second's BatchNorm on its moving statistics)."""
    origin = Origin(port=f"{port.__module__}:{port.__name__}")  # a failure replays this port
    report = assert_training_parity(
        replace(HEAD, make_port=port, origin=origin), Example(2, 32, 3, 2, 0.7, 1), SGD
    )
    assert "after[conv5a.1.running_var]" in {c.name for c in report.comparisons}
