"""The suite's power: the same parity property rejects every planted bug, passes every
faithful refactor. A check that cannot fail here is not a check."""

from dataclasses import replace

import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from parity.assertions import ParityFailure, assert_parity, checker_for
from parity.layout import StateDictMismatchError
from parity.spec import CAM, PAM
from parity.strategies import Example
from tests.power import ports

BUGS = {
    "pam: NHWC read as NCHW by reshape": (PAM, ports.PAMReadsNHWCAsNCHW),
    "pam: softmax over the wrong axis": (PAM, ports.PAMSoftmaxWrongAxis),
    "pam: attention applied untransposed": (PAM, ports.PAMAttentionUntransposed),
    "pam: query and key swapped": (PAM, ports.PAMQueryKeySwapped),
    "pam: residual missing": (PAM, ports.PAMNoResidual),
    "pam: gradient blocked through attention": (PAM, ports.PAMGradientBlocked),
    "pam: attention in float16": (PAM, ports.PAMFloat16Attention),
    "pam: attention mixed across the batch": (PAM, ports.PAMMixesBatch),
    "cam: NHWC read as NCHW by reshape": (CAM, ports.CAMReadsNHWCAsNCHW),
    "cam: softmax over the wrong axis": (CAM, ports.CAMSoftmaxWrongAxis),
    "cam: attention applied untransposed": (CAM, ports.CAMAttentionUntransposed),
    "cam: without the max-minus step": (CAM, ports.CAMWithoutMaxMinus),
    "cam: residual missing": (CAM, ports.CAMNoResidual),
    "cam: gradient blocked through attention": (CAM, ports.CAMGradientBlocked),
    "cam: attention in float16": (CAM, ports.CAMFloat16Attention),
    "cam: attention mixed across the batch": (CAM, ports.CAMMixesBatch),
}

FAITHFUL = {
    "pam: einsum": (PAM, ports.PAMEinsum),
    "pam: row-chunked attention with a remainder chunk": (PAM, ports.PAMRowChunked),
    "cam: einsum": (CAM, ports.CAMEinsum),
    "cam: softmax(-energy)": (CAM, ports.CAMSoftmaxOfNegativeEnergy),
}


def port_pair(pair, layer_class, **changes):
    return replace(
        pair,
        name=f"{pair.name}:{layer_class.__name__}",
        make_port=lambda c: layer_class(),
        **changes,
    )


def counterexample(pair, *, max_examples=100, shrink=True) -> Example:
    """The example the parity property fails on (shrunk), or fail the test if none."""
    found = []

    @settings(
        max_examples=max_examples,
        database=None,
        phases=[Phase.generate, Phase.target, *([Phase.shrink] if shrink else [])],  # no explain
    )
    @given(data=st.data())
    def parity_property(data):
        example = data.draw(pair.examples())
        try:
            assert_parity(pair, example)
        except ParityFailure:
            found.append(example)
            raise

    try:
        parity_property()
    except ParityFailure as failure:
        return failure.report.example
    pytest.fail(
        f"{pair.name}: no counterexample in {max_examples} examples; the suite cannot see this bug"
    )


@pytest.mark.parametrize("name", BUGS)
def test_planted_bug_is_rejected(name):
    pair, layer_class = BUGS[name]
    counterexample(port_pair(pair, layer_class), shrink=False)


def test_batch_mixing_shrinks_to_batch_two():
    """Right only when batch == 1: the minimal counterexample Hypothesis finds has 2."""
    example = counterexample(port_pair(PAM, ports.PAMMixesBatch))
    assert example.batch == 2


def test_batch_mixing_passes_at_batch_one():
    """...and the bug is invisible to a suite that only tries batch 1."""
    pair = port_pair(PAM, ports.PAMMixesBatch)
    assert_parity(pair, Example(1, 16, 3, 5, 0.5, 0))


@pytest.mark.parametrize("name", FAITHFUL)
def test_faithful_refactor_passes(name):
    pair, layer_class = FAITHFUL[name]
    pair = port_pair(pair, layer_class)

    @settings(max_examples=50)
    @given(data=st.data())
    def parity_property(data):
        assert_parity(
            pair,
            data.draw(pair.examples()),
        )

    parity_property()


def test_kernel_reshaped_instead_of_transposed_is_rejected():
    """Shapes fit, values scramble: only the numbers can tell."""
    pair = port_pair(
        PAM, ports._PAM, bindings=ports.bindings_with_kernel_layout(ports.RESHAPED_KERNEL)
    )
    counterexample(pair, shrink=False)


def test_kernel_transposed_on_wrong_axes_is_refused_by_the_converter():
    pair = port_pair(
        PAM, ports._PAM, bindings=ports.bindings_with_kernel_layout(ports.WRONG_AXES_KERNEL)
    )
    with pytest.raises(StateDictMismatchError, match=r"'query_conv.weight': shape \(2, 16, 1, 1\)"):
        checker_for(pair).check(Example(2, 16, 3, 5, 0.5, 0))
