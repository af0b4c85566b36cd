"""The suite's power: the same parity property rejects every planted bug, passes every
faithful refactor. A check that cannot fail here is not a check."""

from dataclasses import replace

import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from parity.assertions import ParityFailure, assert_parity, assert_training_parity, checker_for
from parity.diagnose import diagnose
from parity.layout import StateDictMismatchError
from parity.ports import PortError
from parity.spec import CAM, HEAD, PAM
from parity.strategies import Example
from parity.training import OPTIMIZERS
from tests.power import head_ports, ports

BUGS = {
    "pam: NHWC read as NCHW by reshape": (PAM, ports.PAMReadsNHWCAsNCHW),
    "pam: softmax over the wrong axis": (PAM, ports.PAMSoftmaxWrongAxis),
    "pam: attention applied untransposed": (PAM, ports.PAMAttentionUntransposed),
    "pam: query and key swapped": (PAM, ports.PAMQueryKeySwapped),
    "pam: residual missing": (PAM, ports.PAMNoResidual),
    "pam: gradient blocked through attention": (PAM, ports.PAMGradientBlocked),
    "pam: attention in float16": (PAM, ports.PAMFloat16Attention),
    "pam: softmax slightly scaled (temperature 1.001)": (PAM, ports.PAMSoftmaxSlightlyScaled),
    "pam: attention mixed across the batch": (PAM, ports.PAMMixesBatch),
    "cam: NHWC read as NCHW by reshape": (CAM, ports.CAMReadsNHWCAsNCHW),
    "cam: softmax over the wrong axis": (CAM, ports.CAMSoftmaxWrongAxis),
    "cam: attention applied untransposed": (CAM, ports.CAMAttentionUntransposed),
    "cam: without the max-minus step": (CAM, ports.CAMWithoutMaxMinus),
    "cam: residual missing": (CAM, ports.CAMNoResidual),
    "cam: gradient blocked through attention": (CAM, ports.CAMGradientBlocked),
    "cam: attention in float16": (CAM, ports.CAMFloat16Attention),
    "cam: attention mixed across the batch": (CAM, ports.CAMMixesBatch),
    "head: BatchNorm at Keras' default epsilon": (HEAD, head_ports.HeadKerasDefaultEpsilon),
    "head: padding 'valid' where the reference pads by 1": (HEAD, head_ports.HeadValidPadding),
    "head: the three outputs in another order": (HEAD, head_ports.HeadOutputsReordered),
    "head: ReLU missing after a norm": (HEAD, head_ports.HeadNoReLUAfterNorm),
    "head: ReLU before the norm": (HEAD, head_ports.HeadReLUBeforeNorm),
}

# Bugs that only training mode shows: eval-mode parity holds for them.
TRAINING_BUGS = {
    "head: momentum copied unconverted": head_ports.HeadMomentumUnconverted,
    "head: Keras' BatchNormalization (biased running variance)": head_ports.HeadStockKerasBatchNorm,
}

FAITHFUL = {
    "pam: einsum": (PAM, ports.PAMEinsum),
    "pam: row-chunked attention with a remainder chunk": (PAM, ports.PAMRowChunked),
    "cam: einsum": (CAM, ports.CAMEinsum),
    "cam: softmax(-energy)": (CAM, ports.CAMSoftmaxOfNegativeEnergy),
}


def port_pair(pair, layer_class, **changes):
    """``pair`` with a planted port (the planted classes are their own factories)."""
    return replace(
        pair, name=f"{pair.name}:{layer_class.__name__}", make_port=layer_class, **changes
    )


def counterexample(pair, *, max_examples=100, shrink=True, check=assert_parity) -> Example:
    """The example the property ``check(pair, example)`` fails on (shrunk), or fail the test."""

    @settings(
        max_examples=max_examples,
        database=None,
        phases=[Phase.generate, Phase.target, *([Phase.shrink] if shrink else [])],  # no explain
    )
    @given(data=st.data())
    def parity_property(data):
        check(pair, data.draw(pair.examples()))

    try:
        parity_property()
    except ParityFailure as failure:
        return failure.report.example
    except PortError:  # a shape the port gets wrong, say: rejected all the same
        return None
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


@pytest.mark.parametrize("name", TRAINING_BUGS)
@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_training_bug_is_rejected_by_the_training_step_and_only_there(name, optimizer):
    pair = port_pair(HEAD, TRAINING_BUGS[name])
    assert_parity(pair, Example(2, 32, 3, 5, 0.5, 0))  # evaluation mode cannot see it

    def one_step(pair, example):
        assert_training_parity(pair, example, OPTIMIZERS[optimizer])

    training = replace(
        pair, strategy=pair.examples().filter(lambda e: e.batch * e.height * e.width >= 2)
    )
    counterexample(training, max_examples=25, shrink=False, check=one_step)


def test_running_statistics_swapped_in_conversion_are_rejected_and_named():
    pair = port_pair(HEAD, head_ports._Head, bindings=head_ports.swapped_running_statistics)
    example = counterexample(pair, shrink=False)
    diagnosis = diagnose(checker_for(pair), example)
    assert diagnosis.explained
    assert diagnosis.findings[0].hypothesis == "running mean and variance swapped"


def test_faithful_head_passes_a_training_step_with_each_optimizer():
    for optimizer in OPTIMIZERS.values():
        assert_training_parity(HEAD, Example(2, 40, 4, 3, 0.7, 1), optimizer)


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
