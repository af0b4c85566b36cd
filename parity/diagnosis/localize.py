"""Where inside a module a port first goes wrong, for any bug: no list of bugs, no code per pair.

The reference's forward pass is recorded line by line (``parity.core.steps.Step``) and the
port's every tensor (``PortValue``), on one example whose sides are all different (batch 2,
H != W, C apart from both) and whose attention rows are soft. Each line's value is looked
for among the port's tensors up to layout (``parity.core.relayout``), judged by the tolerance
policy against that line's own float32 error and running error bound. The first line whose
value the port never holds, though no later line built on it is held either, is where the
port first goes wrong; a missed line that something matched is built on was merely never
materialised (a fused operation). At that line, the port's tensors are tested against a few
generic relations to the reference's values (a scalar multiple, an added multiple of an
earlier value, a softmax over another axis): one that holds within the policy is said.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from parity.core.policy import TolerancePolicy, compare
from parity.core.relayout import relayouts
from parity.core.steps import PortValue, Step
from parity.core.strategies import Example
from parity.run.engine import Checker

LOCALIZATION_SIDES = (5, 7)
"""H and W of the example localized on: apart from each other and from the batch (2)."""
LOCALIZATION_SCALE = 0.5
"""Soft attention rows (a saturated row is one-hot whatever its logits)."""
LOCALIZATION_CHANNELS = (32, 24, 40, 16, 48)
"""Channel counts tried in order, the first the pair allows: 32 keeps C, C/8 and H*W apart."""
MAX_STEPS = 120
"""Longer forward passes (the whole DANet: its backbone) are located by sub-module instead
(``parity.diagnosis.divergence``); the head, PAM, CAM and CBAM fit."""
_SOFTMAX = {"_softmax", "softmax"}


@dataclass(frozen=True)
class Relation:
    """A port tensor that relates to a reference value in a simple way, within the policy."""

    port: PortValue
    words: str


@dataclass(frozen=True)
class Localization:
    example: Example
    steps: tuple[Step, ...]
    matched: dict = field(default_factory=dict)  # step index -> (PortValue, ratio)
    aliases: dict = field(default_factory=dict)  # step index -> the step it relays out
    first_wrong: Step | None = None
    readers: tuple[PortValue, ...] = ()  # the port's operations reading its inputs
    relation: Relation | None = None
    port_tensors: int = 0

    @property
    def last_matched(self) -> Step | None:
        end = self.first_wrong.index if self.first_wrong else len(self.steps)
        held = [s for s in self.steps[1:end] if s.index in self.matched]
        return held[-1] if held else None

    def as_dict(self) -> dict:
        """The report's ``localization``: lines as ``{"where", "source"}``, the port's
        operations as ``{"op", "name", "where", "source"}``."""

        def line(step):
            return None if step is None else {"where": step.where, "source": step.source}

        places = [self.relation.port] if self.relation is not None else list(self.readers)
        return {
            "example": self.example._asdict(),
            "lines_matched": len([s for s in self.steps[1:] if s.index in self.matched]),
            "port_tensors": self.port_tensors,
            "right_through": line(self.last_matched),
            "first_wrong": line(self.first_wrong),
            "look_at": [
                {"op": v.op, "name": v.name, "where": v.where, "source": v.source} for v in places
            ],
            "relation": None if self.relation is None else self.relation.words,
        }

    def describe(self) -> str:
        e = self.example
        lines = [
            f"Where it first goes wrong (localized on batch {e.batch}, {e.channels} channels, "
            f"{e.height}x{e.width}, scale {e.scale:g}, seed {e.seed}; the reference's forward "
            f"line by line against the port's {self.port_tensors} tensors, up to layout):"
        ]
        held = [s for s in self.steps[1:] if s.index in self.matched]
        if self.first_wrong is None:
            lines.append(
                f"  the port computes every line's value within the policy ({_lines(len(held))}): "
                "what differs comes after them (which values it returns, in which order) or "
                "is in its gradients"
            )
            return "\n".join(lines)
        last = self.last_matched
        if last is not None:
            before = [s for s in held if s.index < self.first_wrong.index]
            worst = max(self.matched[s.index][1] for s in before)
            lines.append(
                f"  right through {last.describe()} ({_lines(len(before))} matched, the worst "
                f"at {worst:.2g}x)"
            )
        lines.append(f"  first line it never computes: {self.first_wrong.describe()}")
        places = [self.relation.port] if self.relation is not None else list(self.readers)
        for place in places:
            lines.append(f"  look at the port's {place.describe()}")
        if self.relation is not None:
            lines.append(f"  which holds {self.relation.words}")
        return "\n".join(lines)


def _lines(count: int) -> str:
    return f"{count} line" if count == 1 else f"{count} lines"


def localization_example(checker: Checker, example: Example) -> Example:
    pair = checker.pair
    allowed = [c for c in LOCALIZATION_CHANNELS if pair.min_channels <= c <= pair.max_channels]
    channels = allowed[0] if allowed else example.channels
    height, width = LOCALIZATION_SIDES
    return Example(2, channels, height, width, LOCALIZATION_SCALE, example.seed)


def localize(checker: Checker, example: Example) -> Localization | None:
    """The first line of the reference's forward pass the port never computes, on the
    localization example (or, where the port is right there, on ``example``); None where
    the port's framework cannot list its tensors or the forward pass is too long."""
    found = None
    candidates = (localization_example(checker, example), example)
    for candidate in candidates:
        data = checker.example_data(candidate)
        try:
            x, instance, _, _ = checker.loaded_port(candidate, data)
            values = checker.framework.intermediates(instance.layer, x)
        except Exception:  # the port's own code: a port that runs on some shapes only
            if candidate is candidates[-1]:
                raise
            continue
        if values is None:
            return None
        steps = checker.references.steps(candidate.channels, data)
        if len(steps) > MAX_STEPS:
            return None
        one_element = {k: float(v.reshape(-1)[0]) for k, v in data.state.items() if v.size == 1}
        with np.errstate(all="ignore"):  # a port's inf or NaN holds nothing and relates to nothing
            found = _localize(candidate, steps, values, checker.policy, one_element)
        if found.first_wrong is not None:
            return found
    return found


def _sizes(example: Example) -> tuple[int, int, int, int]:
    return (example.batch, example.channels, example.height, example.width)


def _judge(truth, reference, deviation, candidate, policy) -> float:
    """The policy's ratio of ``candidate`` against one reference value."""
    deviations = None if deviation is None else {"v": deviation}
    (comparison,) = compare(
        {"v": truth},
        {"v": truth if reference is None else reference},
        {"v": candidate},
        policy,
        deviations=deviations,
    )
    return comparison.ratio


def _close(truth: np.ndarray, candidate: np.ndarray) -> bool:
    """A cheap first look before the policy's: within 1% of the value's scale."""
    scale = float(np.max(np.abs(truth), initial=0.0))
    return float(np.max(np.abs(candidate - truth), initial=0.0)) <= 1e-2 * max(scale, 1e-30)


def _holding(target, values, sizes, policy):
    """Every port value holding ``target`` (truth, reference, deviation) up to layout within
    the policy, as (value, ratio), in the port's order."""
    truth, reference, deviation = target
    found = []
    for value in values[1:]:
        for read in relayouts(value.value.shape, truth.shape, sizes):
            candidate = read(value.value)
            if not _close(truth, candidate):
                continue
            ratio = _judge(truth, reference, deviation, candidate, policy)
            if ratio <= policy.factor:
                found.append((value, ratio))
                break
    return found


def _localize(example, steps, values, policy: TolerancePolicy, one_element) -> Localization:
    sizes = _sizes(example)
    aliases = relayout_aliases(steps, sizes)
    matched = {0: (values[0], 0.0)}
    used = {0}  # port values that hold some reference value, the input's relayouts too
    for step in steps:
        found = _holding((step.truth, step.reference, step.deviation), values, sizes, policy)
        used |= {value.index for value, _ in found}
        if found and step.index and step.index not in aliases:
            matched[step.index] = found[0]

    def source(index):
        while index in aliases and aliases[index] != index:
            index = aliases[index]
        return index

    children: dict[int, set] = {}
    for step in steps:
        for parent in step.parents:
            children.setdefault(source(parent), set()).add(step.index)

    def feeds_a_match(index, seen=None) -> bool:
        seen = set() if seen is None else seen
        for child in children.get(index, ()):
            if child in seen:
                continue
            seen.add(child)
            if child in matched or feeds_a_match(source(child), seen):
                return True
        return False

    first_wrong = next(
        (
            s
            for s in steps[1:]
            if s.index not in aliases and s.index not in matched and not feeds_a_match(s.index)
        ),
        None,
    )
    result = Localization(example, tuple(steps), matched, aliases, port_tensors=len(values) - 1)
    if first_wrong is None:
        return result
    parents = [source(p) for p in first_wrong.parents]
    held_values = {matched[p][0].index for p in parents if p in matched}
    readers = _readers(values, held_values, used)
    relation = _relation(first_wrong, parents, steps, values, used, sizes, policy, one_element)
    return Localization(
        example,
        tuple(steps),
        matched,
        aliases,
        first_wrong,
        readers,
        relation,
        len(values) - 1,
    )


def relayout_aliases(steps: list[Step], sizes) -> dict[int, int]:
    """Lines that compute nothing of their own: step index -> the earlier line whose value
    it relays out (a view, a permute), or itself for a value that is one number repeated (a
    softmax over one position says nothing of what computed it: neither held nor missed)."""
    aliases = {}
    for step in steps[1:]:
        earlier = next(
            (
                s.index
                for s in steps[: step.index]
                if s.index not in aliases and _relaid(s.truth, step.truth, sizes)
            ),
            None,
        )
        if earlier is not None:
            aliases[step.index] = earlier
    for step in steps[1:]:
        if step.index not in aliases and _constant(step.truth):
            aliases[step.index] = step.index
    return aliases


def _constant(value: np.ndarray) -> bool:
    return value.size > 0 and bool(np.all(value == value.reshape(-1)[0]))


def _relaid(earlier: np.ndarray, later: np.ndarray, sizes) -> bool:
    """``later`` is ``earlier`` in another layout, exactly."""
    reads = relayouts(earlier.shape, later.shape, sizes)
    return any(np.array_equal(read(earlier), later) for read in reads)


def _readers(values: list[PortValue], held: set[int], used: set[int]) -> tuple[PortValue, ...]:
    """The port's first operations that read the matched inputs, compute nothing the
    reference does and feed nothing that does: where to look (two at most, one per source
    line; never the port's last operation, which reads the input for its residual whatever
    the bug)."""
    last = values[-1].index
    readers_of: dict[int, list[int]] = {}
    for value in values:
        for read in value.inputs:
            readers_of.setdefault(read, []).append(value.index)

    def feeds_used(index: int, seen: set) -> bool:
        for reader in readers_of.get(index, ()):
            if reader in used:
                return True
            if reader not in seen:
                seen.add(reader)
                if feeds_used(reader, seen):
                    return True
        return False

    found, places = [], set()
    final = {v.index for v in values if v.index == last or last in readers_of.get(v.index, ())}
    reading = [
        v
        for v in values
        if v.index not in used | final
        and held.intersection(v.inputs)
        and not feeds_used(v.index, set())
    ]
    # Those reading a computed value first: the input is read again by the residual.
    reading.sort(key=lambda v: not (held - {0}).intersection(v.inputs))
    for value in reading:
        place = value.where or value.name
        if place in places:
            continue
        places.add(place)
        found.append(value)
        if len(found) == 2:
            break
    return tuple(found)


# -- relations -----------------------------------------------------------------------------------


def _relation(wrong, parents, steps, values, used, sizes, policy, one_element):
    """The first simple relation that holds, within the policy, between an unmatched port
    tensor and the first wrong line's value, or else one of its inputs' values."""
    unmatched = [v for v in values[1:] if v.index not in used]
    targets = [wrong, *(steps[p] for p in parents if p != 0)]
    tests: list[Callable] = []
    if wrong.op in _SOFTMAX and wrong.op_inputs:
        tests.append(lambda: _softmax_axis(wrong, unmatched, sizes, policy))
    tests.append(lambda: _transposed_input(wrong, steps, unmatched, sizes, policy))
    for step in targets:
        tests.append(lambda step=step: _scalar_multiple(step, unmatched, sizes, policy))
        tests.append(
            lambda step=step: _added_term(step, steps, unmatched, sizes, policy, one_element)
        )
    for test in tests:
        found = test()
        if found is not None:
            return found
    return None


def _candidates(step_shape, unmatched, sizes):
    for value in unmatched:
        for read in relayouts(value.value.shape, step_shape, sizes):
            yield value, read(value.value)


def _scalar_multiple(step: Step, unmatched, sizes, policy) -> Relation | None:
    truth = step.truth
    norm = float(np.sum(truth * truth))
    if norm == 0:
        return None
    for value, candidate in _candidates(truth.shape, unmatched, sizes):
        alpha = float(np.sum(candidate * truth)) / norm
        if not math.isfinite(alpha) or abs(alpha) < 1e-6 or abs(alpha - 1.0) < 1e-4:
            continue
        reference = None if step.reference is None else alpha * step.reference
        deviation = None if step.deviation is None else abs(alpha) * step.deviation
        if _judge(alpha * truth, reference, deviation, candidate, policy) <= policy.factor:
            return Relation(
                value,
                f"{alpha:.3g}x the reference's value of {_named(step)}{_nice(alpha, sizes)}",
            )
    return None


def _added_term(step: Step, steps, unmatched, sizes, policy, one_element) -> Relation | None:
    """The line's value plus a multiple of an earlier value (``gamma * x`` added); where
    several port tensors hold one, the one whose multiple is a parameter's value, else the
    last computed (a line's own partial result, ``gamma * out`` before ``+ x``, holds the
    line's value minus the rest of it)."""
    truth = step.truth
    earlier = [s for s in steps[: step.index] if s.truth.shape == truth.shape]
    found = []
    for value, candidate in _candidates(truth.shape, unmatched[::-1], sizes):
        rest = candidate - truth
        for other in earlier:
            norm = float(np.sum(other.truth * other.truth))
            if norm == 0:
                continue
            beta = float(np.sum(rest * other.truth)) / norm
            if not math.isfinite(beta) or abs(beta) < 1e-6:
                continue
            predicted = truth + beta * other.truth
            if _judge(predicted, None, None, candidate, policy) <= policy.factor:
                named = _parameter(beta, one_element)
                found.append(
                    Relation(
                        value,
                        f"the reference's value of {_named(step)} plus {beta:.3g}x "
                        f"{_named(other)}{named}",
                    )
                )
                if named:
                    return found[-1]
    return found[0] if found else None


def _softmax_axis(step: Step, unmatched, sizes, policy) -> Relation | None:
    logits = step.op_inputs[0]
    axes = [a for a in range(logits.ndim) if logits.shape[a] > 1]
    dim = next((a for a in step.op_arguments if isinstance(a, int)), -1) % logits.ndim
    for axis in axes:
        if axis == dim:
            continue
        shifted = logits - logits.max(axis=axis, keepdims=True)
        other = np.exp(shifted) / np.exp(shifted).sum(axis=axis, keepdims=True)
        for value, candidate in _candidates(other.shape, unmatched, sizes):
            if _close(other, candidate) and _judge(other, None, None, candidate, policy) <= (
                policy.factor
            ):
                return Relation(
                    value,
                    f"the softmax over axis {axis} of the reference's input to "
                    f"{_named(step)} (the reference's is over axis {dim})",
                )
    return None


def _transposed_input(step: Step, steps, unmatched, sizes, policy) -> Relation | None:
    """The line computed from one of its inputs with its last two axes transposed (an
    attention matrix applied the other way round)."""
    if step.recompute is None:
        return None
    for parent in step.parents:
        value = steps[parent].truth
        if value.ndim < 2 or value.shape[-1] != value.shape[-2] or value.shape[-1] == 1:
            continue
        predicted = step.recompute({parent: np.swapaxes(value, -1, -2)})
        if predicted.shape != step.truth.shape:
            continue
        for port_value, candidate in _candidates(predicted.shape, unmatched, sizes):
            if _close(predicted, candidate) and (
                _judge(predicted, None, None, candidate, policy) <= policy.factor
            ):
                return Relation(
                    port_value,
                    f"what {_named(step)} computes with {_named(steps[parent])} transposed "
                    "(its last two axes)",
                )
    return None


def _named(step: Step) -> str:
    if step.is_input:
        return "the input x"
    return f"`{step.code}` ({step.where})"


def _nice(alpha: float, sizes) -> str:
    """``alpha`` as a simple number where it is one (0.354 is 1/sqrt(8)), with the example's
    size it is made of where one is (35 = H*W)."""
    sign = "-" if alpha < 0 else ""
    size = abs(alpha)
    forms = []
    for k in range(2, 65):
        for words, number in (
            (f"{k}", k),
            (f"1/{k}", 1 / k),
            (f"sqrt({k})", math.sqrt(k)),
            (f"1/sqrt({k})", 1 / math.sqrt(k)),
        ):
            if abs(size - number) <= 1e-4 * number and words not in forms:
                forms.append(words)
    if size == 1 or abs(size - 1) <= 1e-4:
        forms = ["1"]
    if not forms:
        return ""
    batch, channels, height, width = sizes
    named = {channels: "C", height: "H", width: "W", height * width: "H*W"}
    named.pop(batch, None)
    numbers = sorted({int(n) for f in forms[:3] for n in _integers(f)} & set(named))
    of_sizes = "".join(f"; {n} = {named[n]} of the example" for n in numbers)
    return ", which is " + " = ".join(sign + f for f in forms[:3]) + of_sizes


def _integers(words: str) -> list[str]:
    return [
        part
        for part in words.replace("/", " ").replace("(", " ").replace(")", " ").split()
        if part.isdigit()
    ]


def _parameter(beta: float, one_element: dict[str, float]) -> str:
    """Where ``beta`` is a one-element parameter's value (``gamma``), or its square."""
    for name, number in one_element.items():
        for words, candidate in ((name, number), (f"{name} squared", number * number)):
            if abs(beta - candidate) <= 1e-4 * abs(candidate):
                return f" ({beta:.3g} is {words})"
    return ""
