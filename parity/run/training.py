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

import numpy as np

from parity.backends.ports import tensorflow_named
from parity.core.errors import PortCrashed
from parity.core.layout import from_data_format
from parity.core.optimizers import Optimizer
from parity.core.strategies import Example
from parity.run.engine import Checker, ExampleReport, check_shapes


def trainable(example: Example) -> bool:
    """BatchNorm needs two values per channel to train on."""
    return example.batch * example.height * example.width >= 2


def _targets(example: Example, shapes) -> list[np.ndarray]:
    """Random class indices (B, H, W) per output, from the example's seed."""
    rng = np.random.default_rng([example.seed, 4])
    return [rng.integers(0, shape[1], size=(shape[0], *shape[2:])) for shape in shapes]


class TrainingChecker:
    def __init__(self, checker: Checker):
        self.checker = checker
        self.pair = checker.pair

    def run_reference(self, example, data, dtype: str, optimizer: Optimizer):
        return self.checker.references.train(
            example.channels, data, dtype, optimizer, lambda shapes: _targets(example, shapes)
        )

    def reference_deviations(self, example, data, optimizer: Optimizer):
        """The running error bound of the training step (see Checker.reference_deviations)."""
        return self.checker.references.train_deviations(
            example.channels, data, optimizer, lambda shapes: _targets(example, shapes)
        )

    def run_port(self, example, data, optimizer: Optimizer):
        fmt = self.pair.data_format
        x, instance, bindings, trained = self.checker.loaded_port(example, data)
        framework = self.checker.framework

        def targets(shapes):  # the port's output shapes
            nchw = [from_data_format(np.empty(shape, np.float32), fmt).shape for shape in shapes]
            return _targets(example, nchw)

        try:
            with framework.dropout_off(instance.layer):
                variables = {id(b.variable): b.variable for b in trained}  # a fused one once
                outputs, loss = framework.train_step(
                    instance.layer, x, targets, fmt, list(variables.values()), optimizer
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
        truth = self.run_reference(example, data, "float64", optimizer)
        reference = self.run_reference(example, data, "float32", optimizer)
        with tensorflow_named(self.checker.framework):
            port = self.run_port(example, data, optimizer)
        check_shapes(truth, port, self.pair.data_format)
        comparisons, _ = self.checker.judge(
            truth,
            reference,
            port,
            lambda: self.reference_deviations(example, data, optimizer),
            lambda: self.run_reference(example, data, "float64", optimizer),
            seed=example.seed,
        )
        return ExampleReport(f"{self.pair.name} (training, {optimizer.name})", example, comparisons)
