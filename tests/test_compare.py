"""The tolerance policy on hand-made tensors: what passes, what fails, what is reported."""

import numpy as np
import pytest

from parity.core.policy import EPS32, TolerancePolicy, compare, describe_failures


def tensors(seed=0, shape=(2, 3, 4, 5)):
    rng = np.random.default_rng(seed)
    truth = rng.standard_normal(shape)
    reference = truth.astype("float32").astype("float64")
    return truth, reference


def test_a_port_as_good_as_the_reference_passes():
    truth, reference = tensors()
    [c] = compare({"output": truth}, {"output": reference}, {"output": reference})
    assert c.passed and c.ratio <= 1


def test_exact_port_passes_with_ratio_zero():
    truth, reference = tensors()
    [c] = compare({"output": truth}, {"output": reference}, {"output": truth})
    assert c.passed and c.ratio == 0


def test_one_wrong_element_fails_and_is_located_in_the_reference_layout():
    truth, reference = tensors()
    port = reference.copy()
    port[1, 2, 0, 3] += 1e-3
    [c] = compare({"output": truth}, {"output": reference}, {"output": port})
    assert not c.passed
    assert c.worst_index == (1, 2, 0, 3)
    assert c.mismatched == 1
    message = describe_failures([c])
    assert "output:" in message and "(1, 2, 0, 3)" in message and "1 of 120 elements" in message


def test_the_factor_is_the_boundary():
    truth, _ = tensors()
    scale = np.abs(truth).max()
    reference = truth + 1e-6 * scale  # reference's own error: 1e-6, above the floor
    policy = TolerancePolicy(factor=10.0, floor_ulps=4.0)
    within = compare({"t": truth}, {"t": reference}, {"t": truth + 9e-6 * scale}, policy)[0]
    beyond = compare({"t": truth}, {"t": reference}, {"t": truth + 11e-6 * scale}, policy)[0]
    assert within.passed and not beyond.passed


def test_floor_applies_when_the_reference_is_exact():
    truth, _ = tensors()
    scale = np.abs(truth).max()
    policy = TolerancePolicy(factor=10.0, floor_ulps=4.0)
    noise = compare({"t": truth}, {"t": truth}, {"t": truth + 20 * EPS32 * scale}, policy)[0]
    bug = compare({"t": truth}, {"t": truth}, {"t": truth + 100 * EPS32 * scale}, policy)[0]
    assert noise.passed and not bug.passed


def test_rounding_noise_raises_the_floor():
    truth, reference = tensors()
    scale = np.abs(truth).max()
    port = truth + 1e-4 * scale
    assert not compare({"t": truth}, {"t": reference}, {"t": port})[0].passed
    noisy = {"t": truth + 2e-5 * scale}
    assert compare({"t": truth}, {"t": reference}, {"t": port}, rounding_noise=[noisy])[0].passed


def test_zero_gradient_is_judged_on_its_layers_scale():
    """key_conv.bias: true gradient 0, float32 noise in both frameworks."""
    truth = {
        "grad[key_conv.weight]": np.full((2, 8, 1, 1), 3.0),
        "grad[key_conv.bias]": np.zeros(2),
    }
    reference = {
        "grad[key_conv.weight]": truth["grad[key_conv.weight]"],
        "grad[key_conv.bias]": np.full(2, 2e-7),
    }
    noise_port = {**reference, "grad[key_conv.bias]": np.full(2, -5e-7)}
    bug_port = {**reference, "grad[key_conv.bias]": np.full(2, 1e-3)}
    assert all(c.passed for c in compare(truth, reference, noise_port))
    failed = [c.name for c in compare(truth, reference, bug_port) if not c.passed]
    assert failed == ["grad[key_conv.bias]"]


def test_all_zero_layer_is_judged_on_the_examples_scale():
    truth = {"output": np.ones(3), "grad[query_conv.weight]": np.zeros(3)}
    reference = dict(truth)
    assert all(
        c.passed
        for c in compare(truth, reference, {**truth, "grad[query_conv.weight]": np.full(3, 1e-8)})
    )
    assert not all(
        c.passed
        for c in compare(truth, reference, {**truth, "grad[query_conv.weight]": np.full(3, 0.1)})
    )


def test_nan_in_the_port_fails():
    truth, reference = tensors()
    port = reference.copy()
    port[0, 0, 0, 0] = np.nan
    [c] = compare({"t": truth}, {"t": reference}, {"t": port})
    assert not c.passed and c.worst_index == (0, 0, 0, 0)


def test_shape_mismatch_is_an_error_not_a_reshape():
    truth, reference = tensors()
    with pytest.raises(ValueError, match=r"output: the port's shape \(2, 4, 5, 3\) differs"):
        compare(
            {"output": truth}, {"output": reference}, {"output": reference.transpose(0, 2, 3, 1)}
        )


def test_running_error_bound_is_a_floor_per_element():
    """An element whose bound is large (it came out of cancellation) may err by that much;
    its neighbours, with small bounds, may not."""
    truth, _ = tensors()
    scale = np.abs(truth).max()
    policy = TolerancePolicy(factor=16.0, floor_ulps=4.0, bound_deviations=4.0)  # explicit
    deviations = np.zeros_like(truth)
    deviations[0, 0, 0, 0] = 1e4  # in eps32: 4 deviations allow 4e4 eps32 * 16
    port = truth.copy()
    port[0, 0, 0, 0] += 16 * 4 * 1e4 * EPS32 * 0.9
    [inside] = compare(
        {"t": truth}, {"t": truth}, {"t": port}, policy, deviations={"t": deviations}
    )
    assert inside.passed and inside.ratio == pytest.approx(16 * 0.9)
    assert inside.floor == pytest.approx(4 * 1e4 * EPS32 / scale)
    port[1, 0, 0, 0] += 16 * 4 * 1e4 * EPS32 * 0.9  # the same error where the bound is 0
    [outside] = compare(
        {"t": truth}, {"t": truth}, {"t": port}, policy, deviations={"t": deviations}
    )
    assert not outside.passed and outside.worst_index == (1, 0, 0, 0)
    assert outside.mismatched == 1


def test_ratio_reported_is_the_worst_element_against_its_own_floor():
    truth, _ = tensors()
    scale = np.abs(truth).max()
    deviations = np.full_like(truth, 1.0)
    deviations[0, 0, 0, 0] = 1e3
    port = truth.copy()
    port[0, 0, 0, 0] += 1e3 * EPS32  # the largest error, on the element allowed the most
    port[1, 1, 1, 1] += 1e2 * EPS32  # a smaller error, where little is allowed
    [c] = compare({"t": truth}, {"t": truth}, {"t": port}, deviations={"t": deviations})
    assert c.worst_index == (1, 1, 1, 1)
    policy = TolerancePolicy()  # the defaults compare() used
    unit = max(policy.floor_ulps * EPS32 * scale, policy.bound_deviations * EPS32 * 1.0)
    assert c.ratio == pytest.approx(1e2 * EPS32 / unit)


def test_a_reference_that_overflows_is_judged_where_it_has_an_error():
    """A float16 reference overflows where the truth is large (the whole DANet at scale
    10): its infinities are no unit. The ratio stays a number, a port as close as the
    reference's finite elements passes, and one off by a bug still fails."""
    truth, reference = tensors()
    reference[0, 0, 0, 0] = np.inf
    scale = np.abs(truth).max()
    policy = TolerancePolicy(factor=10.0, floor_ulps=4.0)
    close = compare({"t": truth}, {"t": reference}, {"t": truth + 20 * EPS32 * scale}, policy)[0]
    bug = compare({"t": truth}, {"t": reference}, {"t": truth + 1e-3 * scale}, policy)[0]
    assert np.isfinite(close.ratio) and np.isfinite(close.reference_error)
    assert close.passed and not bug.passed
