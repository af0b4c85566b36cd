"""The suite's power on the whole DANet: each planted trap is rejected where it acts and
passes where it provably cannot act (so the rejection comes from the trap), and the first
divergence (``parity.diagnosis.divergence``) names the module where it acts and the trap. Forward
only: cheaper, and every trap here changes the outputs."""

from dataclasses import replace

import pytest

from parity.core.errors import ParityFailure
from parity.core.registry import pair
from parity.core.strategies import Example
from parity.diagnosis.divergence import locate
from parity.run.assertions import assert_parity
from parity.run.engine import Checker
from tests.power import danet_ports

EVEN = Example(2, 3, 12, 16, 1.0, 0)  # the stem's input and output (6x8) have even sides
ODD = Example(2, 3, 9, 17, 1.0, 0)  # every stride-2 window's input odd; features 2x3
ONE_BY_ONE = Example(2, 3, 8, 5, 1.0, 0)  # features 1x1: dilation and resizing invisible
# 1x1 images: the head's tolerance floor is narrowest there. BatchNorm's epsilon moves the
# outputs by ~0.1%; on 9x17 images the floor of the head's channel attention (energies of
# several hundred) reaches 13-36x of that (measured), on 1x1 images 90-220x.
TINY = Example(2, 3, 1, 1, 1.0, 0)

# trap: (port, revealing example, concealing example or None, the first divergent module,
# the trap the localization names and where)
TRAPS = {
    "stride-2 'same' padding": (
        danet_ports.StrideTwoSamePadding,
        EVEN,
        ODD,
        "pretrained.conv1.0",
        ("strided 'same' padding", "pretrained.conv1.0"),
    ),
    "max pool 'same' padding": (
        danet_ports.MaxPoolSamePadding,
        EVEN,
        ODD,
        "pretrained.layer1.0.conv1",  # the pool has no weights: seen where it is read
        ("max-pool padding", "pretrained.maxpool"),
    ),
    "dilation on each stage's first block": (
        danet_ports.DilationOnFirstBlock,
        ODD,
        ONE_BY_ONE,
        "pretrained.layer3.0.conv2",
        ("dilation on the wrong block", "pretrained.layer3.0.conv2"),
    ),
    "half-pixel upsampling (align_corners=False)": (
        danet_ports.HalfPixelUpsampling,
        ODD,
        ONE_BY_ONE,
        "",  # every module within: the resize after the last of them
        ("half-pixel resize", "resize"),
    ),
    "BatchNorm epsilon 1e-3": (
        danet_ports.BatchNormKerasEpsilon,
        TINY,
        None,
        "pretrained.conv1.1",
        ("BatchNorm epsilon", "pretrained.conv1.1"),
    ),
}


def whole(port_class):
    return replace(pair("danet"), name=f"danet:{port_class.__name__}", make_port=port_class)


def assert_located(pair, example, first: str, trap: tuple[str, str]) -> None:
    """The first divergent module and the trap named there, every module before it within
    the policy."""
    divergence = locate(Checker(pair), example)
    assert divergence.first is not None, divergence.describe()
    assert divergence.first.path == first, divergence.describe()
    assert (divergence.first.trap.name, divergence.first.trap_module) == trap
    assert all(module.passed for module in divergence.modules[:-1])


@pytest.mark.parametrize("name", TRAPS)
def test_trap_is_rejected_where_it_acts_located_and_named(name):
    port_class, revealing, concealing, first, trap = TRAPS[name]
    with pytest.raises(ParityFailure, match=r"output\[0\]"):
        assert_parity(whole(port_class), revealing, gradients=False)
    assert_located(whole(port_class), revealing, first, trap)
    if concealing is not None:  # where the trap cannot act, the port passes: it was the trap
        assert_parity(whole(port_class), concealing, gradients=False)


def test_explicit_zero_padding_is_a_faithful_refactor():
    pair = whole(danet_ports.ExplicitZeroPadding)
    assert_parity(pair, EVEN, gradients=False)
    assert_parity(pair, ODD)


def test_backbone_kernels_reshaped_in_conversion_are_rejected_and_named():
    pair = replace(whole(danet_ports._DANet), bindings=danet_ports.backbone_kernels_reshaped)
    with pytest.raises(ParityFailure, match=r"output\[0\]"):
        assert_parity(pair, ODD, gradients=False)
    assert_located(pair, ODD, "pretrained.conv1.0", ("kernel reshaped", "pretrained.conv1.0"))


def test_fused_conv_and_batchnorm_is_a_faithful_refactor():
    pair = whole(danet_ports.FusedConvBatchNorm)
    assert_parity(pair, ODD)
    nchw = replace(pair, data_format="channels_first", make_port=_channels_first_fused)
    assert_parity(nchw, EVEN)


def _channels_first_fused(channels):
    return danet_ports.FusedConvBatchNorm(channels, data_format="channels_first")
