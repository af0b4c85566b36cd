"""The bundled port matches the reference, forward and backward, across random shapes."""

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

import parity.strategies as pst
from parity.assertions import assert_parity
from parity.spec import CAM, PAM, channels_first

PAIRS = [PAM, CAM, channels_first(PAM), channels_first(CAM)]


def draw_example(data, pair):
    example = data.draw(
        pst.examples(min_channels=pair.min_channels, max_channels=pair.max_channels),
        label="example",
    )
    event(f"batch {'>= 2' if example.batch >= 2 else '1'}")
    event(f"H*W {'off' if (example.height * example.width) % 8 else 'on'} multiples of 8")
    return example


@pytest.mark.parametrize("pair", PAIRS, ids=lambda p: p.name)
@given(data=st.data())
def test_outputs_match_reference(pair, data):
    assert_parity(pair, draw_example(data, pair), gradients=False)


@pytest.mark.parametrize("pair", PAIRS, ids=lambda p: p.name)
@given(data=st.data())
def test_gradients_match_reference(pair, data):
    """Gradients w.r.t. the input and every parameter, for a random cotangent."""
    report = assert_parity(pair, draw_example(data, pair), gradients=True)
    compared = {c.name for c in report.comparisons}
    assert {"grad[input]", "grad[gamma]"} <= compared
