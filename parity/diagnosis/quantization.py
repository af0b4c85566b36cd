"""Where an int8 file loses precision: each line of the reference's forward pass found among
the file's tensors (dequantized), and how many bits of that line's value the file keeps.

Bits kept = -log2(rms error / rms value), the error taken against the float64 truth: an
int8 tensor that spends its 256 levels on its values keeps about 7 bits of them (a normal
value calibrated to +-3.5 standard deviations: step = 7/255 of one, rounding error step /
sqrt(12)); each int8 layer after it adds its own rounding and carries the errors before it.
A line below ``BUDGET_BITS`` has lost most of its value: its error is more than a quarter of
the value itself. On the bundled PAM, CAM and head's default examples the poorest line kept
2.0 to 6.8 bits but on the two examples whose outputs erred most (docs/measurements.md): a
softmax whose weights lie under its fixed int8 step (1/256) keeps a third of a bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from parity.core.relayout import relayouts
from parity.core.steps import PortValue, Step
from parity.core.strategies import Example
from parity.diagnosis.localize import MAX_STEPS, relayout_aliases
from parity.run.engine import Checker

FLOAT32_MAX = float(np.finfo(np.float32).max)
SHOWN_LINES = 24
"""Longer traces (the whole DANet) print only their verdict lines; report.json has all."""
BUDGET_BITS = 2.0
"""The bits a line of an int8 file must keep: an rms error at most a quarter of the value's."""


@dataclass(frozen=True)
class LineInFile:
    """One line of the reference and the file's tensor that holds it (``_held_by``);
    ``tensor`` None where no tensor holds it as well as zeros would (a line the converter
    fused away, or one lost entirely: the verdict lines say how many)."""

    step: Step
    tensor: PortValue | None
    bits: float  # -log2(rms error / rms value); inf where exact
    max_steps: float  # the largest error in the tensor's quantization steps (nan: float)
    value_rms: float
    lost: float = math.nan  # bits lost from the fewest its inputs keep (nan: none held)

    def describe(self) -> str:
        if self.tensor is None:
            return (
                f"{self._line()}: no tensor of the file holds it better than zeros would "
                "(fused away, or lost)"
            )
        held = f"{self.tensor.op} `{self.tensor.name}`"
        if self.tensor.quantization_step:
            held += f", largest error {self.max_steps:.3g} of its steps"
        return f"{self._line()}: {_bits(self.bits)} kept ({held})"

    def _line(self) -> str:
        return "the input x" if self.step.is_input else self.step.describe()

    def why(self) -> str:
        """The tensor's step against the values it holds, where the step is the coarser."""
        step = self.tensor.quantization_step if self.tensor else 0.0
        if not step or step < self.value_rms:
            return ""
        words = (
            f"its quantization step ({step:.2g}) is {step / self.value_rms:.2g}x the rms of "
            f"the values it holds ({self.value_rms:.2g}): its int8 grid is coarser than they are"
        )
        if step * 255 >= FLOAT32_MAX / 2:
            words += (
                "; its calibrated range reaches float32's largest number: an infinite or "
                "largest-float constant (a max pool's padding, a mask) went into it"
            )
        return words


@dataclass(frozen=True)
class QuantizationTrace:
    example: Example
    lines: tuple[LineInFile, ...]
    budget_bits: float = BUDGET_BITS

    @property
    def first_past_budget(self) -> LineInFile | None:
        return next(
            (line for line in self.lines if line.tensor and line.bits < self.budget_bits), None
        )

    @property
    def most_lost(self) -> LineInFile | None:
        """The line that loses the most bits from its inputs (where precision goes)."""
        losing = [line for line in self.lines if line.tensor and line.lost > 0]
        return max(losing, key=lambda line: line.lost, default=None)

    def describe(self) -> str:
        rows = [
            f"Where the int8 file loses precision (on {self.example.to_text()}; each line of "
            "the reference found among the file's tensors, bits kept = -log2(rms error / rms "
            f"value) against float64 truth; budget {self.budget_bits:g} bits):"
        ]
        if len(self.lines) <= SHOWN_LINES:
            rows += [f"  {line.describe()}" for line in self.lines]
        else:
            rows.append(
                f"  ({len(self.lines)} lines; --report writes each to report.json's `quantization`)"
            )
        first = self.first_past_budget
        held = [line for line in self.lines if line.tensor is not None]
        unheld = len(self.lines) - len(held)
        besides = f" ({unheld} held by no tensor of the file)" if unheld else ""
        if not held:
            rows.append("  no line of the reference is held by a tensor of the file")
        elif first is None:
            rows.append(
                f"  every line the file holds keeps {self.budget_bits:g} bits or more{besides}"
            )
        else:
            rows.append(
                f"  first line past the budget: {first.step.describe()} {_held(first)}{besides}"
            )
        most = self.most_lost
        if most is not None and most is first:
            rows[-1] += f"; it loses the most bits of any line ({most.bits + most.lost:.2g} -> "
            rows[-1] += f"{_bits(most.bits)})"
        elif most is not None:
            rows.append(
                f"  the most bits lost by one line: {most.step.describe()} "
                f"({most.bits + most.lost:.2g} -> {_held(most)[1:]}"
            )
        return "\n".join(rows)

    def as_dict(self) -> dict:
        def line(held: LineInFile) -> dict:
            tensor = held.tensor
            return {
                "where": held.step.where,
                "source": held.step.source,
                "tensor": None if tensor is None else {"op": tensor.op, "name": tensor.name},
                "quantization_step": None if tensor is None else tensor.quantization_step,
                "exact": tensor is not None and math.isinf(held.bits),
                "bits_kept": _number(held.bits),
                "bits_lost": _number(held.lost),
                "max_error_in_steps": _number(held.max_steps),
            }

        first, most = self.first_past_budget, self.most_lost
        return {
            "example": self.example._asdict(),
            "budget_bits": self.budget_bits,
            "lines": [line(held) for held in self.lines],
            "first_past_budget": None if first is None else line(first),
            "most_lost": None if most is None else line(most),
        }


def _held(line: LineInFile) -> str:
    why = line.why()
    return (
        f"({_bits(line.bits)}, in the file's {line.tensor.op} `{line.tensor.name}`)"
        f"{': ' + why if why else ''}"
    )


def _number(value: float) -> float | None:
    """JSON's: None for what has no finite value (an exact line's bits, a float tensor's
    steps, a line held by no tensor)."""
    return value if math.isfinite(value) else None


def _bits(bits: float) -> str:
    return "all bits" if math.isinf(bits) else f"{bits + 0.0:.2g} bits"  # never "-0"


def int8_trace(checker) -> QuantizationTrace | None:
    """Where an int8 file loses precision on the example it erred most on, of those an
    ``parity.run.exported.Int8Measurement`` measured."""
    worst = max(checker.measured, key=lambda m: m.max_steps)
    return quantization_trace(checker, worst.example)


def quantization_trace(checker: Checker, example: Example) -> QuantizationTrace | None:
    """Each line of the reference's forward pass on ``example``, held by the int8 file's
    tensors; None where the file's tensors cannot be listed or the pass is too long."""
    data = checker.example_data(example)
    steps = checker.references.steps(example.channels, data)
    if len(steps) > MAX_STEPS:  # before paying for an export
        return None
    x, instance, _, _ = checker.loaded_port(example, data)
    values = checker.framework.intermediates(instance.layer, x)
    if values is None:
        return None
    sizes = (example.batch, example.channels, example.height, example.width)
    aliases = relayout_aliases(steps, sizes)

    def source(index: int) -> int:
        while aliases.get(index, index) != index:
            index = aliases[index]
        return index

    below = _descendants(values)
    held: dict[int, LineInFile] = {}
    for step in steps:
        if step.index in aliases:
            continue
        inputs = [held.get(source(p)) for p in step.parents]
        inputs = [line for line in inputs if line is not None and line.tensor is not None]
        # Computed from the tensors that hold its inputs, and not one of them in any
        # layout: not a look-alike elsewhere in the file (a convolution's output that an
        # attention over nothing averages to), nor an input passed off as the line (x, or
        # x reshaped, for gamma * out + x).
        held_inputs = [line.tensor for line in inputs]
        candidates = [
            v
            for v in values[1:]
            if all(v.index in below[h.index] for h in held_inputs)
            and not any(_relaid_tensor(v, h) for h in held_inputs)
        ]
        with np.errstate(all="ignore"):
            line = _held_by(step, candidates, sizes)
        kept = [i.bits for i in inputs if math.isfinite(i.bits)]
        finite = line.tensor is not None and math.isfinite(line.bits)
        lost = min(kept) - line.bits if kept and finite else math.nan
        held[step.index] = replace(line, lost=lost)
    return QuantizationTrace(example, tuple(held.values()))


def _relaid_tensor(value: PortValue, other: PortValue) -> bool:
    """``value`` holds ``other``'s numbers, moved about (itself, a reshape, a transpose)."""
    return value.value.size == other.value.size and np.array_equal(
        np.sort(value.value, axis=None), np.sort(other.value, axis=None)
    )


def _descendants(values: list[PortValue]) -> dict[int, set[int]]:
    """Each tensor's index -> the tensors computed from it, itself included."""
    below = {value.index: {value.index} for value in values}
    for value in reversed(values):
        for read in value.inputs:
            below[read] |= below[value.index]
    return below


def _held_by(step: Step, values: list[PortValue], sizes) -> LineInFile:
    """The file's tensor for the line: of those no farther from its value than zeros are
    (a tensor whose every value rounded to zero still holds its line, with no bit of it),
    the first computed among those within a bit of the nearest (least rms error, up to
    layout). The first: a line that lost its bits is still nearer its own tensor than a
    later one that happens to resemble it."""
    truth = step.truth
    value_rms = float(np.sqrt(np.mean(truth * truth)))
    near = []  # (rms error, largest error, tensor)
    for value in values:
        errors = [
            np.abs(read(value.value) - truth)
            for read in relayouts(value.value.shape, truth.shape, sizes)
        ]
        if errors:
            error = min(errors, key=lambda e: float(np.mean(e**2)))
            near.append((float(np.sqrt(np.mean(error**2))), float(np.max(error)), value))
    near = [n for n in near if n[0] <= value_rms]
    if not near or not 0 < value_rms < math.inf:  # zeros, or a truth that overflowed
        return LineInFile(step, None, -math.inf, math.nan, value_rms)
    nearest = min(rms for rms, _, _ in near)
    best_rms, largest, best = next(n for n in near if n[0] <= 2 * nearest)
    bits = math.inf if best_rms == 0 else -math.log2(best_rms / value_rms)
    step_size = best.quantization_step
    max_steps = largest / step_size if step_size else math.nan
    return LineInFile(step, best, bits, max_steps, value_rms)
