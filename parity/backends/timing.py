"""What ``parity bench`` times inside the frameworks themselves: the PyTorch reference's
forward and backward passes, and the machine's matmul throughput in PyTorch and TensorFlow.
(The port is timed through the framework seam: ``parity.frontends.bench``.) The frameworks
are imported on first use: the command's argument checks import this module.
"""

from __future__ import annotations

import statistics
import time

import numpy as np


def times_ms(run, repeats: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(1000.0 * (time.perf_counter() - start))
    return times


def median_ms(run, repeats: int, warmup: int) -> float:
    return statistics.median(times_ms(run, repeats, warmup))


def torch_runs(reference, shape: tuple):
    """``(forward, forward_backward)`` of the PyTorch module ``reference`` on a random
    input of ``shape``, ready to be timed."""
    import torch

    reference = reference.eval()
    x = torch.randn(shape)
    with torch.no_grad():
        outputs = reference(x)
    cotangents = [
        torch.randn_like(y) for y in (outputs if isinstance(outputs, tuple) else (outputs,))
    ]
    parameters = list(reference.parameters())

    def forward():
        with torch.no_grad():
            reference(x)

    def forward_backward():
        x_grad = x.detach().requires_grad_(True)
        outputs = reference(x_grad)
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        torch.autograd.grad(outputs, [x_grad, *parameters], cotangents)

    return forward, forward_backward


def matmul_gflops(size: int = 2048, repeats: int = 5) -> dict:
    """The machine's float32 matmul throughput through each framework (GFLOP/s)."""
    import tensorflow as tf
    import torch

    a = np.random.default_rng(0).standard_normal((size, size)).astype("float32")
    work = 2.0 * size**3 / 1e9
    ta = torch.from_numpy(a)
    tfa = tf.constant(a)
    return {
        "torch": work / (median_ms(lambda: ta @ ta, repeats, 2) / 1000.0),
        "tensorflow": work / (median_ms(lambda: tf.matmul(tfa, tfa).numpy(), repeats, 2) / 1000.0),
    }
