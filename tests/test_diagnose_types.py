"""Typed diagnosis: a port's failure is an exception type carrying its data, the diagnosis
dispatches on the type (never on the message), and a hypothesis is told by its key (never
by its words)."""

from __future__ import annotations

import copy
import math
import pickle
from dataclasses import replace

import keras
import pytest

from parity.backends.torch.variants import compose, pairs, residual_variants
from parity.core import registry
from parity.core.errors import (
    FrozenParameter,
    MissingOutputs,
    OutputShapeMismatch,
    PortCrashed,
    WeightsCreatedPerCall,
    WeightsNotHeld,
)
from parity.core.hypotheses import RoleSwap
from parity.core.spec import with_port
from parity.core.strategies import Example
from parity.diagnosis.crashes import explain_error
from parity.diagnosis.diagnose import Diagnoser, diagnose
from parity.diagnosis.findings import Finding, merge_same_numbers
from parity.pairs.pam import QUERY_KEY_SWAPPED
from parity.run.driver import Budget, find_counterexample
from parity.run.engine import Checker
from tests.power import ports, published_ports

CAM = registry.pair("cam")
PAM = registry.pair("pam")

# Batch 2, H != W, H*W and channels off multiples of 8.
EXAMPLE = Example(batch=2, channels=12, height=3, width=5, scale=1.0, seed=4)


def native(pair, port):
    return replace(pair, name=f"{pair.name}:{port.__name__}", make_port=port)


# -- failures are types with their data -------------------------------------------------------


def test_a_port_that_crashes_on_a_shape_raises_port_crashed_with_that_shape():
    checker = Checker(native(PAM, ports.PAMAssumesSquareInput))
    with pytest.raises(PortCrashed) as caught:
        checker.check(EXAMPLE, gradients=False)
    assert caught.value.input_shape == (2, 3, 5, 12)  # the port's layout: NHWC
    diagnosis = explain_error(checker, EXAMPLE, caught.value)
    assert diagnosis.cause.startswith("the port crashes when H != W and runs when H == W")


def test_a_port_that_returns_another_shape_raises_the_mismatch_with_both_shapes():
    checker = Checker(native(PAM, ports.PAMTransposesSpatialAxes))
    with pytest.raises(OutputShapeMismatch) as caught:
        checker.check(EXAMPLE, gradients=False)
    error = caught.value
    assert (error.port_shape, error.reference_shape) == ((2, 12, 5, 3), (2, 12, 3, 5))
    assert diagnose(checker, EXAMPLE).cause.startswith("spatial axes transposed")


@pytest.mark.parametrize(
    ("pair", "port", "error", "field", "value"),
    [
        (PAM, published_ports.PAMConvsInCall, WeightsCreatedPerCall, "created", None),
        (PAM, ports.PAMGammaNotTrainable, FrozenParameter, "frozen", [("gamma", "gamma")]),
    ],
)
def test_weights_the_port_cannot_hold_are_their_own_types(pair, port, error, field, value):
    checker = Checker(with_port(pair, port))
    with pytest.raises(error) as caught:
        checker.check(EXAMPLE, gradients=False)
    assert isinstance(caught.value, WeightsNotHeld)
    if value is not None:
        assert getattr(caught.value, field) == value
    else:
        assert len(getattr(caught.value, field)) == 6  # query, key, value: kernel and bias
    diagnosis = explain_error(checker, EXAMPLE, caught.value)
    assert diagnosis.restates_error and diagnosis.cause == str(caught.value)


def test_a_parameter_in_a_bare_variable_is_loaded_and_judged_and_still_fails():
    """A gamma Keras does not track is loaded into directly, so the rest of the port is
    judged (here it matches), and the driver fails the port for it all the same."""
    checker = Checker(with_port(CAM, published_ports.CAMBareGamma))
    assert checker.check(EXAMPLE).passed
    assert checker.untracked == (("gamma", "gamma", (1,)),)
    outcome = find_counterexample(checker, budget=Budget(examples=3))
    assert not outcome.passed and outcome.counterexample is None
    assert outcome.failure.startswith("a parameter that is not a tracked weight"), outcome.failure


def test_the_diagnosis_dispatches_on_the_type_not_the_message():
    """A mismatch worded like a crash is explained as a mismatch; weights it cannot hold,
    worded like a crash, are restated: no shape is searched for (no checker is needed)."""

    class Reworded(OutputShapeMismatch):
        def __str__(self):
            return "the port raised ValueError on input of shape (2, 3, 5, 12)"

    mismatch = Reworded("output", (2, 12, 5, 3), (2, 12, 3, 5), "channels_last")
    assert explain_error(None, EXAMPLE, mismatch).cause.startswith("spatial axes transposed")
    valid = OutputShapeMismatch("output", (2, 12, 1, 3), (2, 12, 3, 5), "channels_last")
    assert explain_error(None, EXAMPLE, valid).cause.startswith("padding 'valid'")
    weights = WeightsCreatedPerCall(["the port raised on input of shape (2, 3, 5, 12)"])
    assert explain_error(None, EXAMPLE, weights).restates_error
    missing = MissingOutputs(["output[1]"], ["output[0]"])
    assert explain_error(None, EXAMPLE, missing).cause == (
        "the port produced no output[1] (it has ['output[0]'])"
    )


@pytest.mark.parametrize(
    "error",
    [
        PortCrashed("the port raised", (2, 3, 5, 12)),
        OutputShapeMismatch("output", (1, 2), (2, 1), "channels_last"),
        FrozenParameter([("gamma", "g")]),
    ],
)
def test_a_typed_error_copies_and_pickles_with_its_type_and_fields(error):
    for twin in (copy.copy(error), pickle.loads(pickle.dumps(error))):
        assert type(twin) is type(error)
        assert str(twin) == str(error)
        assert vars(twin) == vars(error)


# -- hypotheses are objects with an identity ---------------------------------------------------


def _found(hypothesis, explains=True):
    return Finding(hypothesis, f"cause of {hypothesis.name}", explains, 1.0)


def test_a_hypothesis_is_merged_by_its_key_whatever_its_words():
    """Query and key named the other way round predict the same numbers as the variant
    with query and key swapped: one finding, found by key even when the variant is
    reworded; a variant that merely shares its words is not it."""
    swap = RoleSwap("query", "key", variant=QUERY_KEY_SWAPPED)
    reworded = replace(QUERY_KEY_SWAPPED, name="energy computed from key and query")
    merged = merge_same_numbers(swap, [_found(reworded), _found(swap)])
    assert len(merged) == 1 and merged[0].hypothesis.key == QUERY_KEY_SWAPPED.key
    impostor = replace(QUERY_KEY_SWAPPED, key="pam.something-else")
    assert len(merge_same_numbers(swap, [_found(impostor), _found(swap)])) == 2


def test_every_pair_gives_its_hypotheses_distinct_keys():
    """PAM's own 'NHWC read as NCHW' and the generic one share their words, not their key."""
    for name, pair in registry.pairs().items():
        diagnoser = Diagnoser(Checker(pair))
        example = Example(2, max(pair.min_channels, 8), 4, 4, 1.0, 0)  # square: every variant
        hypotheses = [*diagnoser.variants(example, outputs=3), *diagnoser.reassignments()]
        keys = [h.key for h in hypotheses]
        assert len(keys) == len(set(keys)), name


def test_a_compound_hypothesis_is_told_by_its_parts_keys():
    cam = {v.key: v for v in CAM.variants}
    both = compose(cam["cam.max-minus-missing"], cam["cam.attention-transposed"])
    assert both.key == "cam.max-minus-missing+cam.attention-transposed"
    assert both.name == "CAM without the max-minus step + attention applied transposed"


def test_which_bug_wraps_the_other_does_not_depend_on_their_words():
    """Two wrapping bugs (a misread layout, a missing residual) nest one way only: the same
    pairs are tried when every name is reversed."""
    variants = residual_variants(square=True)
    reworded = [replace(v, name=v.name[::-1]) for v in variants]
    assert [b.key for b in pairs(variants)] == [b.key for b in pairs(reworded)]
    assert "buffer-cn-written-as-nhwc+residual-missing" in {b.key for b in pairs(variants)}


def test_a_reworded_variant_is_still_named_by_its_key():
    """The diagnosis of a port with CAM's softmax over the wrong axis names that variant's
    key after every variant's words change, and prints the new words."""
    reworded = tuple(replace(v, name=f"renamed: {v.name}") for v in CAM.variants)
    # Only CAM's own variants (residual=False leaves out the generic ones): seconds, not tens.
    pair = replace(native(CAM, ports.CAMSoftmaxWrongAxis), variants=reworded, residual=False)
    diagnosis = diagnose(Checker(pair), EXAMPLE)
    best = diagnosis.findings[0]
    assert diagnosis.explained and best.explains and math.isfinite(best.residual)
    assert best.hypothesis.key == "cam.softmax-over-rows"
    assert best.hypothesis.name == "renamed: softmax over the wrong axis"
    assert diagnosis.as_dict()["hypotheses"][0]["id"] == "cam.softmax-over-rows"


class PAMBackwardAlwaysRaises(ports._PAM):
    """A forward pass that is right on every shape, a backward pass that raises on every
    shape (as the engine's own inputs did on a GPU, made on the CPU)."""

    def combine(self, out, x):
        @keras.ops.custom_gradient
        def residual(out):
            def grad(*args, upstream=None):
                raise RuntimeError("no backward pass here")

            return out, grad

        return super().combine(residual(out), x)


def test_a_crash_in_the_backward_pass_is_not_blamed_on_the_shape():
    """The shape search reruns the procedure that crashed, gradients included: a forward
    pass that runs on larger maps says nothing of a backward pass that never runs."""
    checker = Checker(native(PAM, PAMBackwardAlwaysRaises))
    example = Example(batch=1, channels=8, height=1, width=1, scale=1.0, seed=0)
    checker.check(example, gradients=False)  # the forward pass runs
    with pytest.raises(PortCrashed) as caught:
        checker.check(example)
    diagnosis = explain_error(checker, example, caught.value)
    assert "H or W is 1" not in diagnosis.cause and "batch 1" not in diagnosis.cause
    assert diagnosis.restates_error and "no backward pass here" in diagnosis.cause


class PAMBackwardInHalfPrecision(ports._PAM):
    """The right forward pass; the backward pass carries its gradient through float16, as
    a GPU's TF32 or half-precision kernels would: wrong at precision level, not in
    structure."""

    def combine(self, out, x):
        @keras.ops.custom_gradient
        def residual(out):
            def grad(*args, upstream=None):
                upstream = args[0] if upstream is None else upstream
                return keras.ops.cast(keras.ops.cast(upstream, "float16"), upstream.dtype)

            return out, grad

        return super().combine(residual(out), x)


def test_gradients_off_at_precision_level_are_not_called_a_bug_in_the_gradients():
    checker = Checker(native(PAM, PAMBackwardInHalfPrecision))
    report = checker.check(EXAMPLE)
    assert not report.passed
    assert all(c.passed for c in report.comparisons if c.name.startswith("output"))
    cause = diagnose(checker, EXAMPLE).cause
    assert cause.startswith("a precision-level deviation") and "TF32" in cause, cause
