"""What one training step's optimizer is, in PyTorch's terms: each framework spells it its
own way (``parity.backends.torch.reference.torch_optimizer``; Keras' Adam adds epsilon before
the bias correction: see ``parity.backends.keras.framework``)."""

from __future__ import annotations

from dataclasses import dataclass

ADAM_EPSILON = 1e-3
"""Not PyTorch's default 1e-8. Adam's first step is lr * g / (|g| + eps): for a gradient
whose true value is zero (key_conv.bias: softmax ignores the constant it adds) float32
noise alone decides its sign, so with eps = 1e-8 no float32 implementation, PyTorch's own
included, reproduces the float64 step there (measured: 700x the reference's error). With
eps = 1e-3 the step is still Adam's, linear in g where g is noise."""
ADAM_BETAS = (0.9, 0.999)


@dataclass(frozen=True)
class Optimizer:
    """One optimizer, in PyTorch's terms; each framework spells it its own way
    (``torch_reference.torch_optimizer``; Keras' Adam adds epsilon before the bias
    correction: see ``keras_framework``)."""

    name: str
    learning_rate: float
    momentum: float = 0.9  # SGD
    betas: tuple[float, float] = ADAM_BETAS
    epsilon: float = ADAM_EPSILON


SGD = Optimizer("sgd", 0.1)
ADAM = Optimizer("adam", 1e-2)
OPTIMIZERS = {o.name: o for o in (SGD, ADAM)}
