"""The running error bound that sets the tolerance's floor: it covers what float32 does, in
the orders libraries sum in, and it is tight enough that precision bugs stay visible."""

import numpy as np
import pytest
import torch

from parity.backends.torch.error_bound import RunningErrorBound
from parity.core.errors import NoErrorRule
from parity.core.policy import EPS32


def float32_sums(terms: np.ndarray) -> dict[str, float]:
    """One sum in the orders float32 libraries use."""
    t32 = terms.astype(np.float32)
    sequential = np.float32(0)
    for value in t32:
        sequential = np.float32(sequential + value)
    return {
        "sequential": float(sequential),
        "numpy pairwise": float(np.sum(t32)),
        "torch": float(torch.from_numpy(t32).sum()),
        "blocks of 8 lanes": float(np.sum(t32.reshape(-1, 8), axis=0, dtype=np.float32).sum()),
    }


@pytest.mark.parametrize("seed", range(5))
def test_cancelling_sum_errs_within_a_few_deviations_in_every_order(seed):
    """The shape of grad[query_conv.bias]: terms much larger than their sum."""
    rng = np.random.default_rng(seed)
    terms = rng.standard_normal(4096) * 1e3
    terms = (terms - terms.mean()).astype(np.float32).astype(np.float64)  # sum ~ 0
    x = torch.from_numpy(terms)
    with RunningErrorBound() as bound:
        total = x.sum()
    deviation = float(bound.deviation(total))
    truth = float(np.sum(terms, dtype=np.longdouble))
    for order, value in float32_sums(terms).items():
        assert abs(value - truth) <= 4 * EPS32 * deviation, order
    # ...and the bound is no blanket: the same sum of float16-rounded terms lands past it.
    half = float(np.sum(terms.astype(np.float16).astype(np.float64)))
    assert abs(half - truth) > 2 * 4 * EPS32 * deviation


@pytest.mark.parametrize("seed", range(3))
def test_matrix_product_errs_within_a_few_deviations(seed):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((37, 300)).astype(np.float32).astype(np.float64)
    b = rng.standard_normal((300, 29)).astype(np.float32).astype(np.float64)
    a[:, :150] *= 1e3  # products of mixed sizes that cancel
    with RunningErrorBound() as bound:
        product = torch.from_numpy(a) @ torch.from_numpy(b)
    deviation = bound.deviation(product).numpy()
    truth = product.numpy()
    float32_results = {
        "numpy": a.astype(np.float32) @ b.astype(np.float32),
        "torch": (torch.from_numpy(a).float() @ torch.from_numpy(b).float()).numpy(),
    }
    for name, value in float32_results.items():
        assert np.all(np.abs(value - truth) <= 4 * EPS32 * deviation), name


def test_bound_of_an_attention_output_is_a_few_ulps():
    """A softmax attention's output: a bound of a few eps32 relative, so attention in
    float16 (an error of about 1e-3) stays 100 times past the limit."""
    from reference_torch import PAM_Module

    torch.manual_seed(0)
    module = PAM_Module(16).double()
    torch.nn.init.constant_(module.gamma, 0.7)
    x = torch.randn(2, 16, 5, 7, dtype=torch.float64)
    with RunningErrorBound() as bound:
        y = module(x).detach()
    relative = EPS32 * float(bound.deviation(y).max()) / float(y.abs().max())
    assert relative < 1e-5


def test_every_parameter_gradient_gets_a_bound():
    from reference_torch import CAM_Module, PAM_Module

    for module in (PAM_Module(8).double(), CAM_Module(4).double()):
        channels = 8 if isinstance(module, PAM_Module) else 4
        torch.nn.init.constant_(module.gamma, 0.5)
        x = torch.randn(2, channels, 3, 2, dtype=torch.float64, requires_grad=True)
        with RunningErrorBound() as bound:
            y = module(x)
            grads = torch.autograd.grad(y, [x, *module.parameters()], torch.randn_like(y))
        for grad in grads:
            deviation = bound.deviation(grad)
            assert deviation.shape == grad.shape
            assert torch.all(torch.isfinite(deviation))
            assert torch.any(deviation > 0)


def test_an_operation_without_a_rule_says_which():
    x = torch.rand(4, dtype=torch.float64)
    with pytest.raises(NoErrorRule, match="bessel_j0"), RunningErrorBound():
        torch.special.bessel_j0(x)


def _flushed(values: np.ndarray) -> np.ndarray:
    """float32 with flush-to-zero, as TensorFlow computes on a CPU: subnormal results are 0."""
    v32 = values.astype(np.float32)
    return np.where(np.abs(v32) < np.finfo(np.float32).tiny, 0.0, v32).astype(np.float64)


def test_a_result_float32_flushes_to_zero_is_covered_and_carries_its_error():
    """A saturated sigmoid's gradient (1.8e-39 in CBAM) is below float32's smallest normal
    number: TensorFlow gives 0, and then 0 times whatever follows."""
    x = torch.tensor([-88.0, -90.0, -2.0], dtype=torch.float64)
    scale = torch.tensor([3.0, 1e4, 3.0], dtype=torch.float64)
    with RunningErrorBound() as bound:
        slope = torch.sigmoid(x) * (1.0 - torch.sigmoid(x))  # 6e-39, 8e-40, 0.1
        result = slope * scale
    deviation = bound.deviation(result).numpy()
    flushed = _flushed(_flushed(slope.numpy()) * scale.numpy())
    assert np.all(np.abs(flushed - result.numpy()) <= 2 * EPS32 * deviation)
    # ...and well above the underflow the bound is a few roundings, as before.
    assert deviation[2] < 4 * float(result[2])


def test_underflow_is_the_compute_dtypes():
    """float16 keeps its subnormals (spaced 2**-24): near zero it errs by that, in its own
    units; bfloat16 has float32's exponent range."""
    tiny = torch.tensor([1e-9], dtype=torch.float64)
    deviations = {}
    for precision in ("float32", "float16", "bfloat16"):
        with RunningErrorBound(precision) as bound:
            y = tiny * 1.0
        deviations[precision] = float(bound.deviation(y))
    assert deviations["float16"] == pytest.approx(2.0**-24 / 2.0**-10)
    assert deviations["float32"] == pytest.approx(1e-9, rel=1e-6)  # its own rounding
    assert deviations["bfloat16"] == pytest.approx(1e-9, rel=1e-6)
