"""Run one example through the reference (float64 and float32) and the port, and compare.

All tensors are compared in the reference's layout: the port's activations are converted
from its data format to NCHW and its weight gradients back to PyTorch's layouts, with the
same strict converter that loaded its weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from parity import autodiff
from parity.compare import DEFAULT_POLICY, TensorComparison, TolerancePolicy, compare
from parity.layout import from_data_format, load_state_dict, to_data_format
from parity.rounding import Float32RoundingNoise
from parity.spec import ModulePair
from parity.strategies import Example

ROUNDING_NOISE_DRAWS = 3
"""Simulated float32 runs per example. One draw of random rounding lands near the truth by
chance now and then (a one-element tensor such as grad[gamma] is a single draw): the floor
takes the largest of three."""


@dataclass(frozen=True)
class ExampleData:
    """What an example's seed expands to, as float32 values held in float64 arrays."""

    state: dict[str, np.ndarray]  # reference state_dict
    x: np.ndarray  # (B, C, H, W)
    seed: int

    def cotangents(self, shapes) -> list[np.ndarray]:
        """Random cotangents for outputs of these NCHW shapes (random, so not sum())."""
        rng = np.random.default_rng([self.seed, 1])
        return [_float32_values(rng.standard_normal(tuple(shape))) for shape in shapes]


@dataclass
class ExampleReport:
    pair: str
    example: Example
    comparisons: list[TensorComparison] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.comparisons)

    def worst(self) -> TensorComparison:
        return max(self.comparisons, key=lambda c: c.ratio)


def _float32_values(array: np.ndarray) -> np.ndarray:
    """Floating arrays rounded to float32 values (held in float64); others unchanged."""
    array = np.asarray(array)
    if not np.issubdtype(array.dtype, np.floating):
        return array
    return array.astype(np.float32).astype(np.float64)


def _named_outputs(outputs, convert) -> dict[str, np.ndarray]:
    """``output`` for one output, ``output[i]`` for each of several."""
    if len(outputs) == 1:
        return {"output": convert(outputs[0])}
    return {f"output[{i}]": convert(y) for i, y in enumerate(outputs)}


class Checker:
    """Checks examples of one module pair, reusing modules and layers across examples.

    The reference modules (float32 and float64) and the port's layer are built once per
    channel count and only get new weights per example: building a Keras layer costs more
    than running it on a small input.
    """

    def __init__(self, pair: ModulePair, policy: TolerancePolicy = DEFAULT_POLICY):
        self.pair = pair
        self.policy = policy
        self._references: dict[tuple[int, torch.dtype], torch.nn.Module] = {}
        self._ports: dict[int, object] = {}

    # -- inputs -------------------------------------------------------------------------
    def example_data(self, example: Example) -> ExampleData:
        rng = np.random.default_rng(example.seed)
        module = self.reference(example.channels, torch.float64)
        state = {k: _float32_values(v) for k, v in self.pair.randomize(module, rng).items()}
        x = _float32_values(example.scale * rng.standard_normal(example.shape))
        return ExampleData(state, x, example.seed)

    # -- the reference ------------------------------------------------------------------
    def reference(self, channels: int, dtype: torch.dtype) -> torch.nn.Module:
        key = (channels, dtype)
        if key not in self._references:
            self._references[key] = self.pair.make_reference(channels).to(dtype).eval()
        return self._references[key]

    def run_reference(self, example, data, dtype, gradients) -> dict[str, np.ndarray]:
        module = self.reference(example.channels, dtype)
        module.load_state_dict({k: torch.from_numpy(v) for k, v in data.state.items()})
        x = torch.from_numpy(data.x).to(dtype).requires_grad_(gradients)
        with torch.set_grad_enabled(gradients):
            outputs = autodiff.as_tuple(module(x))
        results = _named_outputs(outputs, lambda y: y.detach().double().numpy())
        if gradients:
            params = dict(module.named_parameters())
            cotangents = [
                torch.from_numpy(c).to(dtype) for c in data.cotangents(y.shape for y in outputs)
            ]
            grads = torch.autograd.grad(
                outputs, [x, *params.values()], cotangents, allow_unused=True
            )
            for name, grad, tensor in zip(
                ["input", *params], grads, [x, *params.values()], strict=True
            ):
                grad = torch.zeros_like(tensor) if grad is None else grad
                results[f"grad[{name}]"] = grad.double().numpy()
        return results

    # -- the port -----------------------------------------------------------------------
    def port(self, channels: int, x: np.ndarray):
        if channels not in self._ports:
            layer = self.pair.make_port(channels)
            if not layer.built:
                layer(x)  # builds it for this channel count
            self._ports[channels] = layer
        return self._ports[channels]

    def run_port(self, example, data, gradients) -> dict[str, np.ndarray]:
        fmt = self.pair.data_format
        x = to_data_format(data.x, fmt).astype(np.float32)
        layer = self.port(example.channels, x)
        bindings = load_state_dict(layer, data.state, bindings=self.pair.bindings(layer))
        if not gradients:
            return _named_outputs(autodiff.forward(layer, x), lambda y: from_data_format(y, fmt))
        parameters = set(dict(self.reference(example.channels, torch.float64).named_parameters()))
        trained = [b for b in bindings if b.torch_key in parameters]

        def cotangents(outputs):
            shapes = [from_data_format(np.empty(y.shape, np.float32), fmt).shape for y in outputs]
            return [to_data_format(c, fmt) for c in data.cotangents(shapes)]

        outputs, grad_x, grads = autodiff.vjp(layer, x, cotangents, [b.variable for b in trained])
        results = _named_outputs(outputs, lambda y: from_data_format(y, fmt))
        results["grad[input]"] = from_data_format(grad_x, fmt)
        for binding, grad in zip(trained, grads, strict=True):
            results[f"grad[{binding.torch_key}]"] = binding.layout.to_torch(grad)
        return results

    # -- the check ----------------------------------------------------------------------
    def check(self, example: Example, *, gradients: bool = True) -> ExampleReport:
        data = self.example_data(example)
        truth = self.run_reference(example, data, torch.float64, gradients)
        reference = self.run_reference(example, data, torch.float32, gradients)
        port = self.run_port(example, data, gradients)
        noisy = []
        for draw in range(ROUNDING_NOISE_DRAWS):
            with Float32RoundingNoise(seed=example.seed + draw):
                noisy.append(self.run_reference(example, data, torch.float64, gradients))
        comparisons = compare(truth, reference, port, self.policy, rounding_noise=noisy)
        return ExampleReport(self.pair.name, example, comparisons)
