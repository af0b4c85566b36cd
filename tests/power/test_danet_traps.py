"""The suite's power on the whole DANet: each planted trap is rejected where it acts and
passes where it provably cannot act (so the rejection comes from the trap), and the
backbone check says whether the backbone's output already leaves the policy. Forward only:
cheap, and every trap here changes the outputs."""

from dataclasses import replace

import pytest

from parity.assertions import ParityFailure, assert_parity
from parity.danet_pair import DANET, DANET_BACKBONE, TEST_BLOCKS, TEST_WIDTH
from parity.strategies import Example
from tests.power import danet_ports

EVEN = Example(2, 3, 12, 16, 1.0, 0)  # the stem's input and output (6x8) have even sides
ODD = Example(2, 3, 9, 17, 1.0, 0)  # every stride-2 window's input odd; features 2x3
ONE_BY_ONE = Example(2, 3, 8, 5, 1.0, 0)  # features 1x1: dilation and resizing invisible
# 1x1 images: the head's tolerance floor is narrowest there. BatchNorm's epsilon moves the
# outputs by ~0.1%; on 9x17 images the floor of the head's channel attention (energies of
# several hundred) reaches 13-36x of that (measured), on 1x1 images 90-220x.
TINY = Example(2, 3, 1, 1, 1.0, 0)

# trap: (revealing example, concealing example or None, whether the backbone's own output
# fails there, or None where the concealing example already isolates the trap)
TRAPS = {
    "stride-2 'same' padding": (danet_ports.StrideTwoSamePadding, EVEN, ODD, None),
    "max pool 'same' padding": (danet_ports.MaxPoolSamePadding, EVEN, ODD, None),
    "dilation on each stage's first block": (
        danet_ports.DilationOnFirstBlock,
        ODD,
        ONE_BY_ONE,
        None,
    ),
    "half-pixel upsampling (align_corners=False)": (
        danet_ports.HalfPixelUpsampling,
        ODD,
        ONE_BY_ONE,
        False,
    ),
    "BatchNorm epsilon 1e-3": (danet_ports.BatchNormKerasEpsilon, TINY, None, True),
}


def whole(port_class):
    return replace(DANET, name=f"danet:{port_class.__name__}", make_port=port_class)


def backbone(port_class):
    return replace(
        DANET_BACKBONE,
        name=f"danet-backbone:{port_class.__name__}",
        make_port=lambda channels: port_class.backbone_class(TEST_BLOCKS, TEST_WIDTH),
    )


@pytest.mark.parametrize("name", TRAPS)
def test_trap_is_rejected_where_it_acts_and_only_there(name):
    port_class, revealing, concealing, in_backbone = TRAPS[name]
    with pytest.raises(ParityFailure, match=r"output\[0\]"):
        assert_parity(whole(port_class), revealing, gradients=False)
    if concealing is not None:
        assert_parity(whole(port_class), concealing, gradients=False)
    if in_backbone:
        with pytest.raises(ParityFailure, match="output"):
            assert_parity(backbone(port_class), revealing, gradients=False)
    elif in_backbone is not None:
        assert_parity(backbone(port_class), revealing, gradients=False)


def test_explicit_zero_padding_is_a_faithful_refactor():
    pair = whole(danet_ports.ExplicitZeroPadding)
    assert_parity(pair, EVEN, gradients=False)
    assert_parity(pair, ODD)


def test_backbone_kernels_reshaped_in_conversion_are_rejected():
    pair = replace(whole(danet_ports._DANet), bindings=danet_ports.backbone_kernels_reshaped)
    with pytest.raises(ParityFailure, match=r"output\[0\]"):
        assert_parity(pair, ODD, gradients=False)


def test_fused_conv_and_batchnorm_is_a_faithful_refactor():
    pair = whole(danet_ports.FusedConvBatchNorm)
    assert_parity(pair, ODD)
    nchw = replace(pair, data_format="channels_first", make_port=_channels_first_fused)
    assert_parity(nchw, EVEN)


def _channels_first_fused(channels):
    return danet_ports.FusedConvBatchNorm(channels, data_format="channels_first")
