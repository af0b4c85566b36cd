"""Matching up to layout (``parity.core.relayout``): the reference's values found in the
port's layouts, and nothing else: a reshape that scrambles positions is no layout."""

import numpy as np

from parity.core.relayout import atoms, relayouts

SIZES = (2, 32, 5, 7)  # batch, channels, H, W: the localization example's, all apart


def _held(port_value, reference_value):
    return any(
        np.array_equal(read(port_value), reference_value)
        for read in relayouts(port_value.shape, reference_value.shape, SIZES)
    )


def test_positions_split_into_height_and_width():
    assert atoms((2, 32, 35), SIZES) == (2, 32, 5, 7)
    assert atoms((2, 35, 35), SIZES) == (2, 5, 7, 5, 7)
    assert atoms((2, 1, 4), SIZES) == (2, 4)  # size-1 axes carry nothing; C/8 stays whole


def test_the_port_layouts_of_a_reference_value_are_found():
    x = np.random.default_rng(0).standard_normal((2, 32, 5, 7))
    nhwc = np.transpose(x, (0, 2, 3, 1))
    assert _held(nhwc, x)
    assert _held(nhwc.reshape(2, 35, 32), x.reshape(2, 32, 35))  # (B, N, C) for (B, C, N)
    energy = np.random.default_rng(1).standard_normal((2, 35, 35))
    assert _held(np.swapaxes(energy, 1, 2), energy)  # held transposed: a layout


def test_a_scrambling_reshape_is_not_a_layout():
    """NHWC reshaped to (B, C, N) as if it were NCHW: the values, but not in any layout."""
    x = np.random.default_rng(0).standard_normal((2, 32, 5, 7))
    scrambled = np.transpose(x, (0, 2, 3, 1)).reshape(2, 32, 35)
    assert not _held(scrambled, x.reshape(2, 32, 35))
    assert not _held(x[:, :, ::-1], x)  # reversed positions
