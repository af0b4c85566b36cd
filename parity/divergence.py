"""Where a failing model first leaves the policy: every sub-module's output, in the order the
reference runs them, judged as the engine judges a whole output.

When a 100-layer port disagrees, the question is *where*. Errors propagate forward, so the
first sub-module whose output fails is where the port's computation first differs; every
module before it is shown within the policy. Sub-modules are matched through the weight map:
a reference module (``pretrained.layer2.0.conv2``) is the one holding the parameters that
map to one Keras layer's weights, so a user's port with its own layer names is located too.
Modules with no parameters (ReLU, pooling, upsampling) are judged inside the next module
that has some.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace

import numpy as np
import torch

from parity import autodiff
from parity.compare import TensorComparison, compare
from parity.engine import Checker, Results, judge
from parity.error_bound import RunningErrorBound
from parity.layout import from_data_format, load_state_dict, to_data_format
from parity.strategies import Example
from parity.traps import Trap, traps_for

WITHIN = 3.0
"""Modules before the first divergence are said to be "within" this ratio when they are."""


@dataclass(frozen=True)
class ModuleVerdict:
    """One sub-module's output, judged: ``path`` in the reference's state_dict names."""

    path: str
    description: str  # what the module is: "Conv2d 3x3, stride 2"
    comparison: TensorComparison
    trap: Trap | None = None  # the known trap whose prediction the port's output matches

    @property
    def passed(self) -> bool:
        return self.comparison.passed


@dataclass(frozen=True)
class Divergence:
    """The judged sub-modules in execution order, up to the first that fails (if any)."""

    modules: tuple[ModuleVerdict, ...]

    @property
    def first(self) -> ModuleVerdict | None:
        return next((m for m in self.modules if not m.passed), None)

    def describe(self) -> str:
        """One line: where, what, by how much; how close the modules before it are."""
        first = self.first
        if first is None:
            return (
                f"every sub-module's output ({len(self.modules)}) is within the policy: the "
                "port differs only after the last of them or only in its gradients"
            )
        before = self.modules[: self.modules.index(first)]
        worst_before = max((m.comparison.ratio for m in before), default=0.0)
        close = f"within {WITHIN:g}x"
        if worst_before > WITHIN:
            close = f"within the policy, the worst at {worst_before:.3g}x"
        trap = f"; the trap: {first.trap.cause}" if first.trap else ""
        return (
            f"first divergence: {first.path or '(the whole module)'} ({first.description}): "
            f"{first.comparison.ratio:.3g}x; {len(before)} modules before it {close}{trap}"
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


def _first_tensor(value):
    while isinstance(value, (tuple, list)):
        value = value[0]
    return value


@contextmanager
def _recording_reference(
    module: torch.nn.Module, paths: set[str], into: dict, inputs: dict | None = None
):
    """Forward hooks that keep each named sub-module's output (and input), in the order
    they run."""
    named = dict(module.named_modules())
    handles = []
    for path in paths:

        def hook(_, args, output, path=path):
            into.setdefault(path, _first_tensor(output).detach())
            if inputs is not None and args:
                inputs.setdefault(path, _first_tensor(args).detach())

        handles.append(named[path].register_forward_hook(hook))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def _recording_port(layers: dict[str, object], into: dict):
    """Each Keras layer's ``call`` wrapped to keep its output (eager only)."""
    originals = {}
    for path, layer in layers.items():
        original = layer.call

        def call(*args, _original=original, _path=path, **kwargs):
            output = _original(*args, **kwargs)
            into.setdefault(_path, np.asarray(_first_tensor(output)))
            return output

        originals[path] = original
        layer.call = call
    try:
        yield
    finally:
        for path, layer in layers.items():
            layer.call = originals[path]


def _owners(root) -> dict[int, object]:
    """The Keras layer that directly holds each variable (by id)."""
    owners = {}
    for layer in root._flatten_layers(include_self=True):
        for variable in [*layer._trainable_variables, *layer._non_trainable_variables]:
            owners[id(variable)] = layer
    return owners


def _common_parent(paths: list[str]) -> str:
    parts = [p.split(".") for p in paths]
    common = []
    for level in zip(*parts, strict=False):
        if len(set(level)) > 1:
            break
        common.append(level[0])
    return ".".join(common)


def matched_modules(bindings, port_layer) -> dict[str, object]:
    """Reference module path -> the Keras layer that holds its parameters. Several reference
    modules held by one layer (a fused convolution and BatchNorm) are matched as their
    common parent."""
    owners = _owners(port_layer)
    modules_of: dict[int, list[str]] = {}
    layer_of: dict[int, object] = {}
    for binding in bindings:
        owner = owners.get(id(binding.variable))
        if owner is None or owner is port_layer:
            continue  # the whole module's own weights (gamma): its output is the result
        path = binding.torch_key.rsplit(".", 1)[0] if "." in binding.torch_key else ""
        modules_of.setdefault(id(owner), [])
        if path not in modules_of[id(owner)]:
            modules_of[id(owner)].append(path)
        layer_of[id(owner)] = owner
    matched = {}
    for key, paths in modules_of.items():
        path = paths[0] if len(paths) == 1 else _common_parent(paths)
        if path and path not in matched:
            matched[path] = layer_of[key]
    return matched


def locate(checker: Checker, example: Example) -> Divergence:
    """Judge the output of every matched sub-module of ``checker``'s pair on ``example``
    (forward pass, inference), in the reference's execution order; stop at the first that
    fails."""
    pair = checker.pair
    data = checker.example_data(example)
    x = to_data_format(data.x, pair.data_format).astype(np.float32)
    instance = checker.port(example.channels, x)
    bindings = checker.bindings(instance, example.channels)
    load_state_dict(
        instance.layer, data.state, bindings=bindings, ignore=(*pair.ignore, *checker.held_at_zero)
    )
    layers = matched_modules(bindings, instance.layer)

    truth_inputs: dict[str, torch.Tensor] = {}

    def reference_outputs(
        dtype, context: Callable = nullcontext, inputs: dict | None = None
    ) -> dict[str, torch.Tensor]:
        module = checker.reference(example.channels, dtype)
        module.load_state_dict({k: torch.from_numpy(v) for k, v in data.state.items()})
        recorded: dict[str, torch.Tensor] = {}
        recording = _recording_reference(module, set(layers), recorded, inputs)
        with recording, torch.no_grad(), context():
            module(torch.from_numpy(data.x).to(dtype))
        return recorded

    def as_numpy(tensors) -> Results:
        return {path: t.double().numpy() for path, t in tensors.items()}

    truth_tensors = reference_outputs(torch.float64, inputs=truth_inputs)
    order = list(truth_tensors)  # execution order: hooks fire as modules finish
    truth = as_numpy(truth_tensors)
    reference = as_numpy(reference_outputs(checker.reference_dtype))
    recorded: dict[str, np.ndarray] = {}
    with _recording_port(layers, recorded):
        autodiff.forward(instance.layer, x, "eager")
    port = {
        path: from_data_format(value, pair.data_format) if value.ndim == 4 else value
        for path, value in recorded.items()
    }

    def deviations() -> Results:
        bound = RunningErrorBound()
        tensors = reference_outputs(torch.float64, lambda: bound)
        return {path: bound.deviation(t).numpy() for path, t in tensors.items()}

    named = dict(checker.reference(example.channels, torch.float64).named_modules())
    verdicts = []
    for path in order:
        if path not in port or np.shape(port[path]) != np.shape(truth[path]):
            continue  # not comparable: another layout inside, or never called
        comparisons, _ = judge(
            {path: truth[path]},
            {path: reference[path]},
            {path: port[path]},
            checker.policy,
            lambda path=path: {path: deviations()[path]},
            lambda path=path: {path: as_numpy(reference_outputs(torch.float64))[path]},
            seed=example.seed,
        )
        verdict = ModuleVerdict(path, describe_module(named[path]), comparisons[0])
        if not verdict.passed:
            trap = _matching_trap(
                named[path], truth_inputs[path], port[path], truth[path], reference[path], checker
            )
            verdicts.append(replace(verdict, trap=trap))
            break
        verdicts.append(verdict)
    return Divergence(tuple(verdicts))


def _matching_trap(module, x, port, truth, reference, checker) -> Trap | None:
    """The first known trap whose prediction, from the reference's own input to the module,
    the port's output matches within the policy (with the reference's error there)."""
    for trap in traps_for(module):
        with torch.no_grad():
            predicted = trap.predict(module, x).double().numpy()
        if predicted.shape != port.shape:
            continue
        shifted = predicted + (reference - truth)  # keeps the reference's own error
        (comparison,) = compare({"m": predicted}, {"m": shifted}, {"m": port}, checker.policy)
        if comparison.passed:
            return trap
    return None
