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

from parity.compare import TensorComparison, compare
from parity.engine import Checker, Results, judge
from parity.error_bound import RunningErrorBound
from parity.framework import port_framework
from parity.layout import from_data_format, load_state_dict, to_data_format
from parity.ports import PortCrashed, describe_error
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
    trap_module: str | None = None  # where the trap is: this module or one just before it

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
        trap = ""
        if first.trap is not None:
            where = "" if first.trap_module == first.path else f" at {first.trap_module}"
            trap = f"; the trap{where}: {first.trap.cause}"
        return (
            f"first divergence: {first.path or 'the first output'} ({first.description}): "
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
    module: torch.nn.Module,
    paths: set[str],
    into: dict,
    inputs: dict | None = None,
    order: list | None = None,
    sprung: tuple[str, Trap] | None = None,
):
    """Forward hooks that keep each named sub-module's output (and input), and the order in
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
                if inputs is not None and args:
                    inputs.setdefault(path, _first_tensor(args).detach())
            return output

        handles.append(sub.register_forward_hook(hook))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


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
    owners = port_framework().owners(port_layer)
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
    leaves: list[str] = []  # every module without children, in execution order

    def reference_outputs(
        dtype, context: Callable = nullcontext, inputs=None, order=None, sprung=None
    ) -> dict[str, torch.Tensor]:
        module = checker.reference(example.channels, dtype)
        module.load_state_dict({k: torch.from_numpy(v) for k, v in data.state.items()})
        recorded: dict[str, torch.Tensor] = {}
        recording = _recording_reference(module, {*layers, ""}, recorded, inputs, order, sprung)
        with recording, torch.no_grad(), context():
            module(torch.from_numpy(data.x).to(dtype))
        return recorded

    def as_numpy(tensors) -> Results:
        return {path: t.double().numpy() for path, t in tensors.items()}

    truth_tensors = reference_outputs(torch.float64, inputs=truth_inputs, order=leaves)
    order = list(truth_tensors)  # execution order: hooks fire as modules finish
    truth = as_numpy(truth_tensors)
    reference = as_numpy(reference_outputs(checker.reference_dtype))
    recorded: dict[str, np.ndarray] = {}
    try:
        with checker.framework.recording_outputs(layers, recorded):
            # the first output
            recorded[""] = checker.framework.forward(instance.layer, x, "eager")[0]
    except Exception as error:  # the port's own failure, typed as the engine types it
        raise PortCrashed(
            f"the port raised {type(error).__name__} on input of shape {x.shape}: "
            f"{describe_error(error)}",
            input_shape=x.shape,
        ) from error
    port = {
        path: from_data_format(value, pair.data_format) if value.ndim == 4 else value
        for path, value in recorded.items()
    }

    def deviations() -> Results:
        bound = RunningErrorBound()
        tensors = reference_outputs(torch.float64, lambda: bound)
        return {path: bound.deviation(t).numpy() for path, t in tensors.items()}

    def explains(at: str, trap: Trap, path: str) -> bool:
        """Does the reference with ``trap`` sprung at module ``at`` compute what the port
        computes at ``path``, within the policy (with the reference's own error there)?"""
        predicted = as_numpy(reference_outputs(torch.float64, sprung=(at, trap)))[path]
        shifted = predicted + (reference[path] - truth[path])
        (comparison,) = compare({path: predicted}, {path: shifted}, port, checker.policy)
        return comparison.passed

    named = dict(checker.reference(example.channels, torch.float64).named_modules())
    verdicts = []
    for index, path in enumerate(order):
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
            previous = order[index - 1] if index else None
            candidates = [path, *_unmatched_between(leaves, previous, path, set(layers))]
            trapped = next(
                (
                    (at, trap)
                    for at in candidates
                    for trap in traps_for(named[at])
                    if explains(at, trap, path)
                ),
                (None, None),
            )
            verdicts.append(replace(verdict, trap=trapped[1], trap_module=trapped[0]))
            break
        verdicts.append(verdict)
    return Divergence(tuple(verdicts))


def _unmatched_between(leaves: list[str], previous: str | None, path: str, matched) -> list[str]:
    """The modules without parameters in the port's weight map (pooling, activations) that
    ran after the last matched module before ``path`` and before ``path`` itself: a
    divergence they cause shows first at ``path``."""

    def position(name):
        if name == "":  # the whole module: after every leaf
            return (len(leaves), len(leaves))
        inside = [i for i, leaf in enumerate(leaves) if leaf == name or leaf.startswith(name + ".")]
        return (min(inside), max(inside)) if inside else None

    span_before = position(previous) if previous else None
    span = position(path)
    if span is None:
        return []
    start = span_before[1] + 1 if span_before else 0
    return [leaf for leaf in leaves[start : span[0]] if leaf not in matched]
