"""The simulated float32 rounding that sets the tolerance's floor."""

import math

import numpy as np
import torch

from parity.backends.torch.rounding import Float32RoundingNoise
from parity.core import registry
from parity.core.policy import EPS32
from parity.core.strategies import Example
from parity.run.engine import Checker

PAM = registry.pair("pam")


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


def test_long_sums_err_by_about_sqrt_n_roundings_of_the_exact_sum():
    """A sum of n terms (uniform in [0, 1]) with every partial sum rounded at random errs
    by sum_j d_j * S_j: a standard deviation of eps32 * sqrt(n) / 3 relative to the sum.
    Judged against the exact sum (math.fsum), not another noisy one, so that a model whose
    roundings lean one way (a bias two noisy runs share and cancel) fails too."""
    n = 10_000
    terms = torch.rand(n, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    exact = math.fsum(terms.tolist())
    errors = []
    for seed in range(8):
        with Float32RoundingNoise(seed=seed):
            noisy = float(terms.sum())
        errors.append(abs(noisy - exact) / exact)
    expected = EPS32 * math.sqrt(n) / 3
    assert expected / 10 < np.median(errors) < 10 * expected, (np.median(errors), expected)


def test_noise_floor_covers_the_cancellation_that_fixed_ulps_miss():
    """At tiny input scales PAM's query bias gradient is a near-total cancellation: the
    simulated rounding moves it by far more than a few ulps of its size."""
    checker, example = Checker(PAM), Example(1, 14, 23, 6, 0.00253, 0)
    data = checker.example_data(example)
    truth = checker.run_reference(example, data, "float64", gradients=True)
    with Float32RoundingNoise(seed=0):
        noisy = checker.run_reference(example, data, "float64", gradients=True)
    name = "grad[query_conv.bias]"
    moved = np.max(np.abs(noisy[name] - truth[name])) / np.max(np.abs(truth[name]))
    assert moved > 100 * 4 * EPS32
    assert checker.check(example).passed
