"""Training-mode parity: BatchNorm on batch statistics, then one optimizer step.

Per example, reference and port start from the same weights and BatchNorm statistics, run
one batch in training mode, take a pixel-wise cross-entropy summed over the outputs (random
targets), and make one step of SGD with momentum or Adam. Compared, in the reference's
layout: the training-mode outputs, the loss, every parameter after the step and every
BatchNorm running statistic after the batch.

Dropout is disabled on both sides (PyTorch's dropout modules in eval mode, Keras' dropout
layers at rate 0) while BatchNorm trains: masks cannot be made identical across
frameworks, and with them off the check is exact for everything else.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 -- PyTorch's convention

from parity.engine import Checker, ExampleReport, check_shapes, judge
from parity.error_bound import RunningErrorBound
from parity.layout import from_data_format
from parity.ports import PortCrashed
from parity.strategies import Example

ADAM_EPSILON = 1e-3
"""Not PyTorch's default 1e-8. Adam's first step is lr * g / (|g| + eps): for a gradient
whose true value is zero (key_conv.bias: softmax ignores the constant it adds) float32
noise alone decides its sign, so with eps = 1e-8 no float32 implementation, PyTorch's own
included, reproduces the float64 step there (measured: 700x the reference's error). With
eps = 1e-3 the step is still Adam's, linear in g where g is noise."""
ADAM_BETAS = (0.9, 0.999)


@dataclass(frozen=True)
class Optimizer:
    """One optimizer, in PyTorch's terms; the port's framework spells it its own way (Keras'
    Adam adds epsilon before the bias correction: see ``keras_framework``)."""

    name: str
    learning_rate: float
    momentum: float = 0.9  # SGD
    betas: tuple[float, float] = ADAM_BETAS
    epsilon: float = ADAM_EPSILON

    def torch(self, parameters):
        # foreach=False: one parameter at a time, in the plain operations the running
        # error bound has rules for (the same arithmetic as the fused multi-tensor kernels).
        if self.name == "sgd":
            return torch.optim.SGD(
                parameters, lr=self.learning_rate, momentum=self.momentum, foreach=False
            )
        return torch.optim.Adam(
            parameters, lr=self.learning_rate, betas=self.betas, eps=self.epsilon, foreach=False
        )


SGD = Optimizer("sgd", 0.1)
ADAM = Optimizer("adam", 1e-2)
OPTIMIZERS = {o.name: o for o in (SGD, ADAM)}


def trainable(example: Example) -> bool:
    """BatchNorm needs two values per channel to train on."""
    return example.batch * example.height * example.width >= 2


def _targets(example: Example, shapes) -> list[np.ndarray]:
    """Random class indices (B, H, W) per output, from the example's seed."""
    rng = np.random.default_rng([example.seed, 4])
    return [rng.integers(0, shape[1], size=(shape[0], *shape[2:])) for shape in shapes]


def _dropout_off(module: torch.nn.Module):
    for child in module.modules():
        if isinstance(child, torch.nn.modules.dropout._DropoutNd):
            child.eval()


class TrainingChecker:
    def __init__(self, checker: Checker):
        self.checker = checker
        self.pair = checker.pair

    def run_reference(self, example, data, dtype, optimizer: Optimizer):
        tensors = self._reference_tensors(example, data, dtype, optimizer)
        return {name: t.detach().double().numpy() for name, t in tensors.items()}

    def reference_deviations(self, example, data, optimizer: Optimizer):
        """The running error bound of the training step (see Checker.reference_deviations)."""
        bound = RunningErrorBound()
        with bound:
            tensors = self._reference_tensors(example, data, torch.float64, optimizer)
        return {name: bound.deviation(t).numpy() for name, t in tensors.items()}

    def _reference_tensors(self, example, data, dtype, optimizer: Optimizer):
        module = self.checker.reference(example.channels, dtype)
        module.load_state_dict({k: torch.from_numpy(v) for k, v in data.state.items()})
        module.train()
        _dropout_off(module)
        try:
            x = torch.from_numpy(data.x).to(dtype)
            outputs = module(x)
            outputs = outputs if isinstance(outputs, tuple) else (outputs,)
            targets = _targets(example, [y.shape for y in outputs])
            loss = sum(
                F.cross_entropy(y, torch.from_numpy(t))
                for y, t in zip(outputs, targets, strict=True)
            )
            step = optimizer.torch(module.parameters())
            step.zero_grad()
            loss.backward()
            step.step()
            results = {f"output[{i}]": y.detach() for i, y in enumerate(outputs)}
            results["loss"] = loss.detach().reshape(1)
            for name, value in module.state_dict().items():
                if value.is_floating_point():
                    results[f"after[{name}]"] = value.detach().clone()
            return results
        finally:
            module.eval()
            for parameter in module.parameters():
                parameter.grad = None

    def run_port(self, example, data, optimizer: Optimizer):
        fmt = self.pair.data_format
        x, instance, bindings, trained = self.checker.loaded_port(example, data)
        framework = self.checker.framework

        def targets(shapes):  # the port's output shapes
            nchw = [from_data_format(np.empty(shape, np.float32), fmt).shape for shape in shapes]
            return _targets(example, nchw)

        try:
            with framework.dropout_off(instance.layer):
                outputs, loss = framework.train_step(
                    instance.layer, x, targets, fmt, [b.variable for b in trained], optimizer
                )
        except Exception as error:  # a crashing port fails, with its shape
            raise PortCrashed(
                f"the port raised {type(error).__name__} in a training step on input of shape "
                f"{x.shape}: {error}",
                input_shape=x.shape,
            ) from error
        results = {f"output[{i}]": from_data_format(y, fmt) for i, y in enumerate(outputs)}
        results["loss"] = np.asarray([loss])
        for binding in bindings:
            value = framework.to_numpy(binding.variable)
            results[f"after[{binding.torch_key}]"] = binding.layout.to_torch(value)
        return results

    def check(self, example: Example, optimizer: Optimizer) -> ExampleReport:
        data = self.checker.example_data(example)
        truth = self.run_reference(example, data, torch.float64, optimizer)
        reference = self.run_reference(example, data, torch.float32, optimizer)
        port = self.run_port(example, data, optimizer)
        check_shapes(truth, port, self.pair.data_format)
        comparisons, _ = judge(
            truth,
            reference,
            port,
            self.checker.policy,
            lambda: self.reference_deviations(example, data, optimizer),
            lambda: self.run_reference(example, data, torch.float64, optimizer),
            seed=example.seed,
        )
        return ExampleReport(f"{self.pair.name} (training, {optimizer.name})", example, comparisons)
