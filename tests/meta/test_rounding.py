"""The simulated float32 rounding that sets the tolerance's floor."""

import numpy as np
import torch

from parity.compare import EPS32
from parity.engine import Checker
from parity.rounding import Float32RoundingNoise
from parity.spec import PAM
from parity.strategies import Example


def test_exact_operations_are_left_exact():
    x = torch.randn(3, 4, dtype=torch.float64)
    with Float32RoundingNoise(seed=0):
        results = [torch.relu(x), x.permute(1, 0), -x, x.amax(dim=1), x.reshape(12)]
    expected = [torch.relu(x), x.permute(1, 0), -x, x.amax(dim=1), x.reshape(12)]
    for got, want in zip(results, expected, strict=True):
        assert torch.equal(got, want)


def test_computed_results_move_by_at_most_one_float32_rounding():
    a, b = torch.randn(1000, dtype=torch.float64), torch.randn(1000, dtype=torch.float64)
    with Float32RoundingNoise(seed=0):
        product = a * b
    relative = ((product - a * b) / (a * b)).abs()
    assert relative.max() <= EPS32
    assert relative.max() > EPS32 / 2


def test_long_sums_carry_more_than_one_rounding():
    """A sum of n terms rounded one after another errs by ~sqrt(n) roundings, up to n."""
    terms = torch.rand(10_000, dtype=torch.float64)
    errors = []
    for seed in range(8):
        with Float32RoundingNoise(seed=seed):
            errors.append(abs(float(terms.sum() - terms.sum())) / float(terms.sum()))
    assert 2 * EPS32 < np.median(errors) < 10_000 * EPS32


def test_noise_floor_covers_the_cancellation_that_fixed_ulps_miss():
    """At tiny input scales PAM's query bias gradient is a near-total cancellation: the
    simulated rounding moves it by far more than a few ulps of its size."""
    checker, example = Checker(PAM), Example(1, 14, 23, 6, 0.00253, 0)
    data = checker.example_data(example)
    truth = checker.run_reference(example, data, torch.float64, gradients=True)
    with Float32RoundingNoise(seed=0):
        noisy = checker.run_reference(example, data, torch.float64, gradients=True)
    name = "grad[query_conv.bias]"
    moved = np.max(np.abs(noisy[name] - truth[name])) / np.max(np.abs(truth[name]))
    assert moved > 100 * 4 * EPS32
    assert checker.check(example).passed
