"""The strategies draw the examples that expose bugs, in useful proportions."""

import numpy as np
import pytest
from hypothesis import given, settings

import parity.core.strategies as pst
from parity.core import registry
from parity.core.strategies import Example
from parity.run.engine import Checker

CAM = registry.pair("cam")

DRAWS = 1000  # the first few hundred of a derandomized run lean to small, simple examples


@pytest.fixture(scope="module")
def drawn():
    examples = []

    @settings(max_examples=DRAWS, derandomize=True, database=None)
    @given(pst.examples(min_channels=1))
    def collect(example):
        examples.append(example)

    collect()
    return examples


def share(examples, predicate):
    return sum(map(predicate, examples)) / len(examples)


def cam_rows_max(example):
    """The largest attention weight of each CAM row, computed in float64."""
    x = Checker(CAM).example_data(example).x
    flat = x.reshape(example.batch, example.channels, -1)
    energy = np.einsum("bin,bjn->bij", flat, flat)
    logits = -energy - (-energy).max(axis=-1, keepdims=True)
    attention = np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
    return attention.max(axis=-1)


def test_shapes_that_expose_bugs_are_common(drawn):
    assert len(drawn) >= DRAWS * 0.9
    assert share(drawn, lambda e: e.batch >= 2) > 0.4
    assert share(drawn, lambda e: e.batch == 1) > 0.05
    assert share(drawn, lambda e: e.height != e.width) > 0.6
    assert share(drawn, lambda e: 1 in (e.height, e.width)) > 0.05
    assert share(drawn, lambda e: (e.height * e.width) % 8 != 0) > 0.5
    assert share(drawn, lambda e: e.channels % 8 != 0) > 0.5
    assert share(drawn, lambda e: e.channels % 8 == 0) > 0.05
    assert share(drawn, lambda e: e.scale < 0.01) > 0.02
    assert share(drawn, lambda e: e.scale > 3) > 0.05


def test_cam_softmax_is_soft_in_many_examples_and_saturated_in_some(drawn):
    """A saturated (one-hot) CAM softmax tests nothing about the softmax: keep both."""
    with_channels = [e for e in drawn if e.channels >= 2]
    soft = share(with_channels, lambda e: cam_rows_max(e).min() < 0.9)
    saturated = share(with_channels, lambda e: cam_rows_max(e).min() > 1 - 1e-6)
    assert soft > 0.3
    assert saturated > 0.05


def test_arguments_are_checked_eagerly_with_what_to_fix():
    with pytest.raises(ValueError, match=r"min_side=3 is larger than max_side=1"):
        pst.examples(min_side=3, max_side=1)
    with pytest.raises(ValueError, match=r"min_channels=0 must be at least 1"):
        pst.channel_counts(min_channels=0)
    with pytest.raises(ValueError, match=r"Expected 0 < min_scale <= max_scale"):
        pst.input_scales(min_scale=1.0, max_scale=0.5)


def test_example_text_round_trips_and_bad_text_is_named():
    example = Example(2, 17, 3, 1, 0.0123, 4242)
    assert Example.from_text(example.to_text()) == example
    with pytest.raises(ValueError, match=r"Expected 6 comma-separated values.*Received: '1,2,3'"):
        Example.from_text("1,2,3")
