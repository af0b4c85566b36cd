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

from dataclasses import dataclass, replace

import numpy as np

from parity.backends.ports import describe_error
from parity.backends.protocol import port_framework
from parity.backends.torch.reference import describe_module
from parity.backends.torch.traps import Trap, traps_for
from parity.core.errors import PortCrashed
from parity.core.layout import from_data_format
from parity.core.policy import TensorComparison, compare
from parity.core.strategies import Example
from parity.run.engine import Checker, Results

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
    x, instance, bindings, _trained = checker.loaded_port(example, data)
    layers = matched_modules(bindings, instance.layer)
    paths = {*layers, ""}
    references = checker.references
    leaves: list[str] = []  # every module without children, in execution order

    def reference_outputs(dtype: str = "float64", sprung=None) -> Results:
        return references.record(example.channels, data, dtype, paths, sprung=sprung)

    truth = references.record(example.channels, data, "float64", paths, order=leaves)
    order = list(truth)  # execution order: hooks fire as modules finish
    reference = reference_outputs(checker.reference_dtype)
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
        return references.record_deviations(example.channels, data, paths)

    def explains(at: str, trap: Trap, path: str) -> bool:
        """Does the reference with ``trap`` sprung at module ``at`` compute what the port
        computes at ``path``, within the policy (with the reference's own error there)?"""
        predicted = reference_outputs(sprung=(at, trap))[path]
        shifted = predicted + (reference[path] - truth[path])
        (comparison,) = compare({path: predicted}, {path: shifted}, port, checker.policy)
        return comparison.passed

    named = references.submodules(example.channels)
    verdicts = []
    for index, path in enumerate(order):
        if path not in port or np.shape(port[path]) != np.shape(truth[path]):
            continue  # not comparable: another layout inside, or never called
        comparisons, _ = checker.judge(
            {path: truth[path]},
            {path: reference[path]},
            {path: port[path]},
            lambda path=path: {path: deviations()[path]},
            lambda path=path: {path: reference_outputs()[path]},
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
