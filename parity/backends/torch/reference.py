"""The PyTorch reference as the engine runs it: the reference side of the framework seam.

Everything the engine, training, diagnosis and divergence ask of the reference goes through
:class:`TorchReference`: one module per channel count and dtype, an example's state loaded,
outputs and a vector-Jacobian product, one training step, sub-module outputs recorded by
hooks, and each of them once more under the running error bound. Dtypes cross as names
(``"float64"``), arrays as NumPy, so nothing outside this module, the hypotheses about the
reference (``variants``, ``traps``) and its arithmetic instruments (``rounding``,
``error_bound``) calls PyTorch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 -- PyTorch's convention

from parity.backends.protocol import as_tuple
from parity.backends.torch.error_bound import RunningErrorBound
from parity.backends.torch.steps import record_steps

if TYPE_CHECKING:
    from parity.backends.torch.traps import Trap
    from parity.core.optimizers import Optimizer
    from parity.core.steps import Step
    from parity.core.strategies import ExampleData

Results = dict[str, np.ndarray]
Forward = Callable[[torch.nn.Module, torch.Tensor], Any]
"""Replaces a module's forward pass: the diagnosis' variants of the reference."""


def torch_dtype(name: str) -> torch.dtype:
    """``"float64"`` -> ``torch.float64``; a name PyTorch lacks is a ValueError."""
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"Expected a PyTorch dtype name. Received: {name!r}")
    return dtype


def set_threads(threads: int) -> None:
    torch.set_num_threads(threads)


class TorchReference:
    """One pair's reference modules, built once per (channel count, dtype) and reused: each
    example only loads its state."""

    def __init__(
        self, make_reference: Callable[[int], torch.nn.Module], precision: str = "float32"
    ):
        self._make = make_reference
        self._precision = precision  # the port's compute dtype: what its roundings err by
        self._modules: dict[tuple[int, str], torch.nn.Module] = {}

    def module(self, channels: int, dtype: str = "float64") -> torch.nn.Module:
        key = (channels, dtype)
        if key not in self._modules:
            self._modules[key] = self._make(channels).to(torch_dtype(dtype)).eval()
        return self._modules[key]

    def parameter_names(self, channels: int) -> list[str]:
        return [name for name, _ in self.module(channels).named_parameters()]

    def submodules(self, channels: int) -> dict[str, torch.nn.Module]:
        """Every sub-module by its path (``""`` the whole module)."""
        return dict(self.module(channels).named_modules())

    def _loaded(self, channels: int, data: ExampleData, dtype: str) -> torch.nn.Module:
        module = self.module(channels, dtype)
        module.load_state_dict({k: torch.from_numpy(v) for k, v in data.state.items()})
        return module

    def _bounded(self, compute: Callable[[], dict]) -> Results:
        """``compute()``'s tensors, each replaced by its running error bound."""
        bound = RunningErrorBound(self._precision)
        with bound:
            tensors = compute()
        return {name: bound.deviation(t).numpy() for name, t in tensors.items()}

    # -- evaluation -----------------------------------------------------------------------
    def run(
        self,
        channels: int,
        data: ExampleData,
        dtype: str,
        *,
        gradients: bool,
        forward: Forward | None = None,
        skip: Iterable[str] = (),
    ) -> Results:
        """Outputs (``output`` or ``output[i]``) and, with ``gradients``, the gradients of
        sum(output * cotangent) w.r.t. the input and every parameter but ``skip`` (those the
        port has no counterpart for), as float64 NumPy arrays."""
        return _numpy(self._evaluate(channels, data, dtype, gradients, forward, set(skip)))

    def deviations(
        self, channels: int, data: ExampleData, *, gradients: bool, skip: Iterable[str] = ()
    ) -> Results:
        """The running error bound of every tensor :meth:`run` gives
        (``parity.backends.torch.error_bound``), in units of the roundoff. Raises NoErrorRule for an
        operation without a rule."""
        return self._bounded(
            lambda: self._evaluate(channels, data, "float64", gradients, None, set(skip))
        )

    def _evaluate(self, channels, data, dtype, gradients, forward, skip) -> dict:
        module = self._loaded(channels, data, dtype)
        x = torch.from_numpy(data.x).to(torch_dtype(dtype)).requires_grad_(gradients)
        with torch.set_grad_enabled(gradients):
            outputs = as_tuple(module(x) if forward is None else forward(module, x))
        results = named_outputs(outputs, lambda y: y.detach())
        if gradients:
            params = dict(module.named_parameters())
            cotangents = [
                torch.from_numpy(c).to(torch_dtype(dtype))
                for c in data.cotangents(y.shape for y in outputs)
            ]
            tensors = [x, *params.values()]
            grads = torch.autograd.grad(outputs, tensors, cotangents, allow_unused=True)
            for name, grad, tensor in zip(["input", *params], grads, tensors, strict=True):
                if name not in skip:
                    results[f"grad[{name}]"] = torch.zeros_like(tensor) if grad is None else grad
        return results

    # -- training -------------------------------------------------------------------------
    def train(
        self,
        channels: int,
        data: ExampleData,
        dtype: str,
        optimizer: Optimizer,
        targets: Callable[[list[tuple[int, ...]]], list[np.ndarray]],
    ) -> Results:
        """One training step (``parity.run.training``): the training-mode outputs, the summed
        pixel-wise cross-entropy against ``targets(output shapes)``, and every floating
        state entry after one step of ``optimizer``."""
        return _numpy(self._train(channels, data, dtype, optimizer, targets))

    def train_deviations(self, channels, data, optimizer, targets) -> Results:
        """The running error bound of the training step (see :meth:`deviations`)."""
        return self._bounded(lambda: self._train(channels, data, "float64", optimizer, targets))

    def _train(self, channels, data, dtype, optimizer, targets) -> dict:
        module = self._loaded(channels, data, dtype)
        module.train()
        _dropout_off(module)
        try:
            outputs = as_tuple(module(torch.from_numpy(data.x).to(torch_dtype(dtype))))
            loss = sum(
                F.cross_entropy(y, torch.from_numpy(t))
                for y, t in zip(outputs, targets([tuple(y.shape) for y in outputs]), strict=True)
            )
            step = torch_optimizer(optimizer, module.parameters())
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

    # -- line by line ---------------------------------------------------------------------
    def steps(self, channels: int, data: ExampleData) -> list[Step]:
        """The forward pass on the example, line by line (``parity.backends.torch.steps``):
        float64 values, their running error bound, and the compute dtype's values."""
        x = torch.from_numpy(data.x)
        return record_steps(
            self._loaded(channels, data, "float64"),
            self._loaded(channels, data, self._precision),
            x.to(torch.float64),
            x.to(torch_dtype(self._precision)),
            self._precision,
        )

    # -- sub-modules ----------------------------------------------------------------------
    def record(
        self,
        channels: int,
        data: ExampleData,
        dtype: str,
        paths: Iterable[str],
        *,
        order: list | None = None,
        sprung: tuple[str, Trap] | None = None,
    ) -> Results:
        """The output of each sub-module in ``paths`` (``""``: the whole module's first
        output) on the example, in the order they finish (inference). ``order`` receives
        every module without children as it runs; ``sprung`` (path, trap) replaces that
        module's output with the trap's prediction."""
        return _numpy(self._record(channels, data, dtype, set(paths), order, sprung))

    def record_deviations(self, channels, data, paths) -> Results:
        """The running error bound of each recorded output (see :meth:`deviations`)."""
        return self._bounded(
            lambda: self._record(channels, data, "float64", set(paths), None, None)
        )

    def _record(self, channels, data, dtype, paths, order, sprung) -> dict:
        module = self._loaded(channels, data, dtype)
        recorded: dict[str, torch.Tensor] = {}
        with _recording(module, paths, recorded, order, sprung), torch.no_grad():
            module(torch.from_numpy(data.x).to(torch_dtype(dtype)))
        return recorded


def named_outputs(outputs, convert) -> dict:
    """``output`` for one output, ``output[i]`` for each of several."""
    if len(outputs) == 1:
        return {"output": convert(outputs[0])}
    return {f"output[{i}]": convert(y) for i, y in enumerate(outputs)}


def torch_optimizer(optimizer: Optimizer, parameters) -> torch.optim.Optimizer:
    # foreach=False: one parameter at a time, in the plain operations the running error
    # bound has rules for (the same arithmetic as the fused multi-tensor kernels).
    if optimizer.name == "sgd":
        return torch.optim.SGD(
            parameters, lr=optimizer.learning_rate, momentum=optimizer.momentum, foreach=False
        )
    return torch.optim.Adam(
        parameters,
        lr=optimizer.learning_rate,
        betas=optimizer.betas,
        eps=optimizer.epsilon,
        foreach=False,
    )


def describe_module(module: torch.nn.Module) -> str:
    """A module as a reader of the original code knows it: its type and what sets its
    geometry (kernel, stride, dilation, padding) or numerics (BatchNorm's epsilon)."""
    kind = type(module).__name__
    details = []
    if isinstance(module, torch.nn.Conv2d):
        details.append("x".join(map(str, module.kernel_size)))
        for name, default in (("stride", 1), ("dilation", 1), ("padding", 0)):
            value = getattr(module, name)
            value = value if isinstance(value, str) else tuple(value)
            if value not in (default, (default, default)):
                if not isinstance(value, str) and len(set(value)) == 1:
                    value = value[0]
                details.append(f"{name} {value}")
    elif isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
        details.append(f"eps {module.eps:g}")
    return f"{kind} {', '.join(details)}" if details else kind


def _numpy(tensors: dict) -> Results:
    return {name: t.detach().double().numpy() for name, t in tensors.items()}


def _dropout_off(module: torch.nn.Module) -> None:
    for child in module.modules():
        if isinstance(child, torch.nn.modules.dropout._DropoutNd):
            child.eval()


def _first_tensor(value):
    while isinstance(value, (tuple, list)):
        value = value[0]
    return value


@contextmanager
def _recording(module, paths: set[str], into: dict, order, sprung):
    """Forward hooks that keep each named sub-module's output, and the order in
    which every module without children runs; ``sprung`` (path, trap) replaces that
    module's output with the trap's prediction from its input."""
    handles = []
    for path, sub in module.named_modules():
        leaf = not any(True for _ in sub.children())
        if path not in paths and not leaf and (sprung is None or path != sprung[0]):
            continue

        def hook(sub, args, output, path=path, leaf=leaf):
            if order is not None and leaf and path not in order:
                order.append(path)
            if sprung is not None and path == sprung[0]:
                output = sprung[1].predict(sub, *args)
            if path in paths:
                into.setdefault(path, _first_tensor(output).detach())
            return output

        handles.append(sub.register_forward_hook(hook))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
