"""The suite's power: the same parity property rejects every planted bug, passes every
faithful refactor. A check that cannot fail here is not a check."""

from dataclasses import replace
from typing import NamedTuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parity.core import registry
from parity.core.errors import OutputShapeMismatch, StateDictMismatchError
from parity.core.hypotheses import BATCH_NORM_STATISTICS
from parity.core.optimizers import OPTIMIZERS
from parity.core.policy import describe_failures
from parity.core.spec import ModulePair
from parity.core.strategies import Example, examples
from parity.diagnosis.diagnose import diagnose
from parity.run.assertions import assert_parity, assert_training_parity, checker_for
from parity.run.driver import Budget, TrainingStep, find_counterexample
from tests.power import head_ports, ports
from tests.power.rejections import ParityFailureOn, Raises, Rejection

CAM = registry.pair("cam")
HEAD = registry.pair("head")
PAM = registry.pair("pam")
# A bug in the attention reaches every tensor, but which ones show it depends on the
# example (at small input scales attention rows are near uniform and only gradients
# differ): any may fail, except what the bug provably leaves exact.
ANY_TENSOR = ParityFailureOn()
ROWS_SUM_TO_ONE = ParityFailureOn(  # out = A @ (W x + b): b's gradient needs only A's row sums
    passes=("value_conv.bias",)
)
OUTPUT = ParityFailureOn(fails=("output",))  # wrong whatever the example
RESIDUAL = ParityFailureOn(  # x + gamma * out: no parameter's gradient sees the residual
    fails=("output", "grad[input]"), passes=("query_conv", "key_conv", "value_conv", "gamma")
)
POSITION_BRANCH = ParityFailureOn(  # conv5a, conv51: the channel branch stays exact
    fails=("output[0]", "output[1]"), passes=("output[2]", "conv5c", "conv52", "conv7")
)
HEAD_WITH_SIDES_OF_5 = examples(  # two unpadded 3x3 convolutions in a row take 4 off a side
    min_channels=HEAD.min_channels, max_channels=HEAD.max_channels, min_side=5, max_side=16
)


class Planted(NamedTuple):
    """A planted bug: the pair, its port, what it must be rejected for, and the examples
    on which it shows as that (the pair's own by default)."""

    pair: ModulePair
    port: type
    rejected_for: Rejection
    examples: object = None

    def port_pair(self) -> ModulePair:
        pair = port_pair(self.pair, self.port)
        return pair if self.examples is None else replace(pair, strategy=self.examples)


BUGS = {
    "pam: NHWC read as NCHW by reshape": Planted(PAM, ports.PAMReadsNHWCAsNCHW, ANY_TENSOR),
    "pam: softmax over the wrong axis": Planted(PAM, ports.PAMSoftmaxWrongAxis, ANY_TENSOR),
    "pam: attention applied untransposed": Planted(PAM, ports.PAMAttentionUntransposed, ANY_TENSOR),
    "pam: query and key swapped": Planted(PAM, ports.PAMQueryKeySwapped, ROWS_SUM_TO_ONE),
    "pam: residual missing": Planted(PAM, ports.PAMNoResidual, RESIDUAL),
    "pam: gradient blocked through attention": Planted(
        PAM,
        ports.PAMGradientBlocked,
        ParityFailureOn(
            fails=("grad[input]", "query_conv", "key_conv"),
            passes=("output", "value_conv", "gamma"),  # the forward pass is exact
        ),
    ),
    "pam: attention in float16": Planted(PAM, ports.PAMFloat16Attention, ANY_TENSOR),
    "pam: softmax slightly scaled (temperature 1.001)": Planted(
        PAM, ports.PAMSoftmaxSlightlyScaled, ROWS_SUM_TO_ONE
    ),
    "pam: attention mixed across the batch": Planted(PAM, ports.PAMMixesBatch, ROWS_SUM_TO_ONE),
    "cam: NHWC read as NCHW by reshape": Planted(CAM, ports.CAMReadsNHWCAsNCHW, ANY_TENSOR),
    "cam: softmax over the wrong axis": Planted(CAM, ports.CAMSoftmaxWrongAxis, ANY_TENSOR),
    "cam: attention applied untransposed": Planted(CAM, ports.CAMAttentionUntransposed, ANY_TENSOR),
    "cam: without the max-minus step": Planted(CAM, ports.CAMWithoutMaxMinus, ANY_TENSOR),
    "cam: residual missing": Planted(CAM, ports.CAMNoResidual, RESIDUAL),
    "cam: gradient blocked through attention": Planted(
        CAM,
        ports.CAMGradientBlocked,
        ParityFailureOn(fails=("grad[input]",), passes=("output", "gamma")),
    ),
    "cam: attention in float16": Planted(CAM, ports.CAMFloat16Attention, ANY_TENSOR),
    "cam: attention mixed across the batch": Planted(CAM, ports.CAMMixesBatch, ANY_TENSOR),
    "head: BatchNorm at Keras' default epsilon": Planted(
        HEAD, head_ports.HeadKerasDefaultEpsilon, ANY_TENSOR
    ),
    # Smaller outputs, or a crash where the convolutions leave no pixel: shown on sides of 5+.
    "head: padding 'valid' where the reference pads by 1": Planted(
        HEAD, head_ports.HeadValidPadding, Raises(OutputShapeMismatch), HEAD_WITH_SIDES_OF_5
    ),
    "head: the three outputs in another order": Planted(
        HEAD,
        head_ports.HeadOutputsReordered,
        ParityFailureOn(fails=("output[0]", "output[1]", "output[2]")),
    ),
    "head: ReLU missing after a norm": Planted(
        HEAD, head_ports.HeadNoReLUAfterNorm, POSITION_BRANCH
    ),
    "head: ReLU before the norm": Planted(HEAD, head_ports.HeadReLUBeforeNorm, POSITION_BRANCH),
}

# Bugs that only training mode shows: eval-mode parity holds for them, and in the training
# step the outputs and updated weights (batch statistics) stay exact.
TRAINING_BUGS = {
    "head: momentum copied unconverted": (
        head_ports.HeadMomentumUnconverted,
        ParityFailureOn(fails=("running_",), passes=("output", ".weight", ".bias")),
    ),
    "head: Keras' BatchNormalization (biased running variance)": (
        head_ports.HeadStockKerasBatchNorm,
        ParityFailureOn(
            fails=("running_var",), passes=("output", "running_mean", ".weight", ".bias")
        ),
    ),
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


def counterexample(
    pair,
    rejected_for: Rejection,
    *,
    max_examples=100,
    shrink=True,
    procedure=None,
    checker=None,
) -> Example:
    """The counterexample the driver finds for ``pair`` (``procedure``: evaluation by
    default; ``checker``: the pair's own by default), or fail the test: when no example
    fails, and when the failure is not ``rejected_for`` (a crash, a refused weight, a
    failure on tensors the bug cannot touch or one that does not replay is not this bug
    seen)."""
    budget = Budget(examples=max_examples, seed=None, shrink=shrink)  # the profile's seed
    outcome = find_counterexample(checker or checker_for(pair), procedure, budget)
    if outcome.passed:
        pytest.fail(
            f"{pair.name}: no counterexample in {max_examples} examples; "
            "the suite cannot see this bug"
        )
    wrong = rejected_for.mismatch(outcome)
    if wrong:
        details = outcome.failure or describe_failures(outcome.report.comparisons)
        pytest.fail(f"{pair.name}: rejected for another reason than its bug: {wrong}\n{details}")
    return outcome.counterexample


@pytest.mark.parametrize("name", BUGS)
def test_planted_bug_is_rejected_for_its_bug(name):
    planted = BUGS[name]
    counterexample(planted.port_pair(), planted.rejected_for, shrink=False)


def test_batch_mixing_shrinks_to_batch_two():
    """Right only when batch == 1: the minimal counterexample Hypothesis finds has 2."""
    example = counterexample(port_pair(PAM, ports.PAMMixesBatch), ROWS_SUM_TO_ONE)
    assert example.batch == 2


def test_batch_mixing_passes_at_batch_one():
    """...and the bug is invisible to a suite that only tries batch 1."""
    pair = port_pair(PAM, ports.PAMMixesBatch)
    assert_parity(pair, Example(1, 16, 3, 5, 0.5, 0))


@pytest.mark.parametrize("name", TRAINING_BUGS)
@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_training_bug_is_rejected_by_the_training_step_and_only_there(name, optimizer):
    layer_class, rejected_for = TRAINING_BUGS[name]
    pair = port_pair(HEAD, layer_class)
    assert_parity(pair, Example(2, 32, 3, 5, 0.5, 0))  # evaluation mode cannot see it

    step = TrainingStep(optimizer)  # on the examples BatchNorm can train on
    counterexample(pair, rejected_for, max_examples=25, shrink=False, procedure=step)


def test_running_statistics_swapped_in_conversion_are_rejected_and_named():
    pair = port_pair(HEAD, head_ports._Head, bindings=head_ports.swapped_running_statistics)
    example = counterexample(pair, OUTPUT, shrink=False)
    diagnosis = diagnose(checker_for(pair), example)
    assert diagnosis.explained
    assert diagnosis.findings[0].hypothesis.key == BATCH_NORM_STATISTICS.key


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
    counterexample(pair, ANY_TENSOR, shrink=False)


def test_kernel_transposed_on_wrong_axes_is_refused_by_the_converter():
    pair = port_pair(
        PAM, ports._PAM, bindings=ports.bindings_with_kernel_layout(ports.WRONG_AXES_KERNEL)
    )
    with pytest.raises(StateDictMismatchError, match=r"'query_conv.weight': shape \(2, 16, 1, 1\)"):
        checker_for(pair).check(Example(2, 16, 3, 5, 0.5, 0))
