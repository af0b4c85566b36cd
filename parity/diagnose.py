"""When parity fails, say why: test named hypotheses against the failing example.

Each hypothesis predicts what the port computes: a variant of the reference with one known
bug (``parity.variants``), the port itself with its weights assigned another way (query
and key named the other way round, kernels in another layout), or a probe (does sample 0
change sample 1?). A hypothesis explains the failure when the port matches its prediction
within the tolerance policy, on the failing example and on a richer one (batch 2, H != W),
so that a coincidence on a tiny shape does not count. "How well" is the worst error ratio
of the port against the prediction (1 means float32 noise).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from parity.compare import compare, floor_arguments
from parity.engine import Checker, ExampleData, ExampleReport
from parity.layout import CONV_KERNEL, Binding, Layout
from parity.ports import PortCrashed, PortError
from parity.strategies import Example
from parity.variants import output_permutations, pairs, residual_variants
from parity.weight_map import name_role, reference_role

PRECISION_LIMIT = 3e-2
"""A failure whose relative errors all stay below this is precision-level, not structural:
a structural bug moves outputs by a sizeable fraction of their scale."""


@dataclass
class Finding:
    hypothesis: str
    cause: str
    explains: bool
    residual: float  # worst ratio of the port against this hypothesis' prediction
    suggestion: str = ""
    explains_failing_example: bool = False  # on the counterexample itself, not the richer one
    composed: bool = False  # two known bugs at once

    def as_dict(self):
        return {
            "hypothesis": self.hypothesis,
            "cause": self.cause,
            "explains": self.explains,
            "residual_ratio": None if not math.isfinite(self.residual) else self.residual,
            "suggestion": self.suggestion or None,
        }


@dataclass
class Diagnosis:
    explained: bool
    cause: str
    findings: list[Finding] = field(default_factory=list)
    suggestion: str = ""
    restates_error: bool = False  # the cause is the port's own error message, no more

    def text(self) -> str:
        lines = [
            f"Diagnosis: {self.cause}"
            if self.explained
            else f"Diagnosis: unexplained. {self.cause}"
        ]
        if self.suggestion:
            lines.append(self.suggestion)
        return "\n".join(lines)

    def as_dict(self):
        return {
            "explained": self.explained,
            "cause": self.cause,
            "suggestion": self.suggestion or None,
            "hypotheses": [f.as_dict() for f in self.findings],
        }


# -- kernel layouts a port may have been loaded through ----------------------------------


@dataclass(frozen=True)
class _Reshaped(Layout):
    """OIHW reshaped to HWIO: shapes fit, values scramble."""

    def to_keras(self, array):
        return np.asarray(array).reshape(self.keras_shape(array.shape))

    def to_torch(self, array):
        kh, kw, i, o = array.shape
        return np.asarray(array).reshape(o, i, kh, kw)


KERNEL_LAYOUTS = {
    "OIHW transposed to HWIO (correct)": CONV_KERNEL,
    "OIHW reshaped into HWIO without a transpose": _Reshaped(
        "reshaped", CONV_KERNEL.torch_layout, CONV_KERNEL.keras_layout, CONV_KERNEL.to_keras_axes
    ),
    "in and out swapped (HWOI)": Layout("HWOI", CONV_KERNEL.torch_layout, "HWOI", (2, 3, 0, 1)),
    "kernel transposed on H and W (WHIO)": Layout(
        "WHIO", CONV_KERNEL.torch_layout, "WHIO", (3, 2, 1, 0)
    ),
}


class Diagnoser:
    def __init__(self, checker: Checker):
        self.checker = checker
        self.pair = checker.pair
        self.policy = checker.policy

    # -- running hypotheses -------------------------------------------------------------
    def _residual(self, report: ExampleReport, truth, reference, port) -> tuple[bool, float]:
        # The floor of the example checked (the variant's truth differs little where the
        # variant explains the failure, which is what this asks).
        floor = floor_arguments(report.truth, report.floor or {})
        comparisons = compare(truth, reference, port, self.policy, **floor)
        return all(c.passed for c in comparisons), max(c.ratio for c in comparisons)

    def _variant(self, report, data, variant):
        example, gradients = report.example, "grad[input]" in report.truth
        run = self.checker.run_reference
        try:
            truth = run(example, data, torch.float64, gradients, forward=variant.forward)
            reference = run(example, data, torch.float32, gradients, forward=variant.forward)
        except RuntimeError:  # the variant does not apply to this shape
            return False, math.inf
        if any(np.shape(truth[k]) != np.shape(report.port[k]) for k in truth):
            return False, math.inf
        return self._residual(report, truth, reference, report.port)

    def _reloaded(self, report, data, bindings):
        gradients = "grad[input]" in report.truth
        try:
            port = self.checker.run_port(report.example, data, gradients, bindings=bindings)
        except (PortError, ValueError):
            return False, math.inf
        return self._residual(report, report.truth, report.reference, port)

    # -- the hypotheses ------------------------------------------------------------------
    def variants(self, example: Example, outputs: int = 1):
        variants = []
        if self.pair.residual:
            variants += residual_variants(
                square=example.height == example.width, data_format=self.pair.data_format
            )
        if outputs > 1:
            variants += output_permutations(outputs)
        return [*variants, *self.pair.variants]

    def weight_hypotheses(self, example: Example, data: ExampleData):
        """(name, cause, bindings, suggestion) for other ways to assign the port's weights."""
        fmt_x = (
            data.x if self.pair.data_format == "channels_first" else data.x.transpose(0, 2, 3, 1)
        )
        instance = self.checker.port(example.channels, fmt_x.astype(np.float32))
        current = self.checker.bindings(instance, example.channels)
        hypotheses = [
            hypothesis
            for swap in self.pair.role_swaps
            if (hypothesis := self._role_swap(swap, current, instance)) is not None
        ]
        for name, layout in KERNEL_LAYOUTS.items():
            kernels = [b for b in current if len(data.state[b.torch_key].shape) == 4]
            if not kernels or all(b.layout == layout for b in kernels):
                continue
            fits = all(
                layout.keras_shape(data.state[b.torch_key].shape) == b.keras_shape for b in kernels
            )
            if not fits:
                continue
            alternative = [
                Binding(b.torch_key, b.variable, layout) if b in kernels else b for b in current
            ]
            if layout is CONV_KERNEL:
                cause = (
                    "the kernel layout is wrong in conversion: converted with the correct "
                    "OIHW -> HWIO transpose instead, the kernels make the port match"
                )
            else:
                cause = (
                    f"the kernel layout is wrong in conversion: the port reads its kernels as "
                    f"if they were {name}; loaded that way, they make the port match"
                )
            hypotheses.append((f"kernel layout: {name}", cause, alternative, ""))
        for swap in self.pair.buffer_swaps:
            exchanged = _buffers_swapped(swap, current)
            if any(s.variable is not b.variable for s, b in zip(exchanged, current, strict=True)):
                hypotheses.append((swap.name, swap.cause, exchanged, ""))
        return hypotheses

    def _role_swap(self, swap, current, instance):
        """The port's weights for ``swap``'s two roles loaded into each other's place: a
        hypothesis (name, cause, bindings, the weight map that makes it pass), or None
        where the pair's parameters hold no such two roles."""
        roles = {b.torch_key: reference_role(b.torch_key, self.pair.roles) for b in current}
        partners = {swap.first: swap.second, swap.second: swap.first}
        swapped = []
        for b in current:
            role, kind = roles[b.torch_key]
            partner_role = partners.get(role)
            partner = partner_role and next(
                (o for o in current if roles[o.torch_key] == (partner_role, kind)), None
            )
            swapped.append(Binding(b.torch_key, partner.variable, b.layout) if partner else b)
        if all(s.variable is b.variable for s, b in zip(swapped, current, strict=True)):
            return None
        mapping = {b.torch_key: instance.name_of(b.variable) for b in swapped}
        mapping.update({key: None for key in self.checker.declared_absent})
        suggestion = json.dumps(mapping, indent=2)
        cause = _names_contradicted(swap, current, swapped, instance.name_of, self.pair.roles)
        return swap.name, cause, swapped, f"Pass this as --weight-map FILE.json:\n{suggestion}"

    def batch_leak(self, report: ExampleReport, data: ExampleData) -> Finding | None:
        """Does sample 0 change sample 1's output? Is the port right on batch 1?"""
        example = report.example
        if example.batch < 2:
            return None
        rng = np.random.default_rng([example.seed, 3])
        other = data.x.copy()
        other[0] = np.asarray(example.scale * rng.standard_normal(other[0].shape), np.float32)
        changed = replace(data, x=other)
        before = self.checker.run_port(example, data, gradients=False)
        after = self.checker.run_port(example, changed, gradients=False)
        moved = max(float(np.max(np.abs(before[k][1:] - after[k][1:]))) for k in before)
        scale = max(float(np.max(np.abs(before[k][1:]))) for k in before) or 1.0
        if moved / scale <= 100 * self.policy.floor:
            return None
        singles = self.checker.check(example._replace(batch=1), gradients=False)
        cause = (
            f"information leaks across the batch: changing sample 0's input moves sample 1's "
            f"output by {moved / scale:.2g} of its scale"
        )
        if singles.passed:
            cause += "; with batch 1 the port is right"
        return Finding(
            "information leaking across the batch", cause, singles.passed, singles.worst().ratio
        )

    def pairs_of_bugs(self, variants, examples, datas) -> list[Finding]:
        """Two known bugs at once, tried when no single one explains the failure; stops at
        the first pair that does. A pair is run on the richer example only once it
        explains the failing one."""
        findings = []
        for both in pairs(variants):
            results = [self._variant(examples[0], datas[0], both)]
            if results[0][0]:
                results += [
                    self._variant(r, d, both) for r, d in zip(examples[1:], datas[1:], strict=True)
                ]
            finding = replace(_finding(both.name, both.cause, results), composed=True)
            findings.append(finding)
            if finding.explains:
                break
        return findings

    # -- a port that could not be compared -------------------------------------------------
    def _runs(self, example: Example) -> bool:
        try:
            self.checker.check(example, gradients=False)
        except PortError:
            return False
        return True

    def diagnose_error(self, example: Example, error: PortError) -> Diagnosis:
        """Weights that cannot be held are their own diagnosis; for a crash, find the
        shapes it needs."""
        shapes = getattr(error, "shapes", None)
        if shapes is not None:
            return self._diagnose_shapes(error, *shapes)
        if not isinstance(error, PortCrashed):
            return Diagnosis(True, str(error), restates_error=True)
        h, w = example.height, example.width
        findings = []
        if h != w and self._runs(example._replace(height=max(h, w), width=max(h, w))):
            findings.append(
                f"the port crashes when H != W and runs when H == W ({max(h, w)}x{max(h, w)}): "
                "it takes H where W belongs, or the reverse"
            )
        if not findings and 1 in (h, w):
            larger = example._replace(height=max(h, 2), width=max(w, 2) + (h == w))
            if self._runs(larger):
                findings.append("the port crashes when H or W is 1 and runs on larger maps")
        if not findings and example.batch == 1 and self._runs(example._replace(batch=2)):
            findings.append("the port crashes with batch 1 and runs with batch 2")
        if not findings:
            larger = example._replace(height=max(h, 5), width=max(w, 6))
            try:
                self.checker.check(larger, gradients=False)
            except PortError as other:
                if getattr(other, "shapes", None) is not None:
                    found = self._diagnose_shapes(other, *other.shapes)
                    if not found.restates_error:
                        return Diagnosis(True, f"{found.cause}; on smaller maps it crashes")
        if not findings:
            return Diagnosis(True, f"the port crashes on this input: {error}", restates_error=True)
        return Diagnosis(True, "; ".join(findings))

    def _diagnose_shapes(self, error, got, expected) -> Diagnosis:
        if len(got) == 4 and len(expected) == 4:
            if got == (expected[0], expected[1], expected[3], expected[2]):
                return Diagnosis(
                    True,
                    "spatial axes transposed: the port returns H and W swapped "
                    f"({got} where {expected} was expected, in NCHW)",
                )
            lost = {expected[2] - got[2], expected[3] - got[3]}
            if got[:2] == expected[:2] and len(lost) == 1 and lost.pop() > 0:
                return Diagnosis(
                    True,
                    "padding 'valid' where the reference pads: the port's maps come out "
                    f"{expected[2] - got[2]} pixels smaller ({got} where {expected} was "
                    "expected, in NCHW)",
                )
        return Diagnosis(True, str(error), restates_error=True)

    # -- the whole diagnosis ------------------------------------------------------------------
    def richer_example(self, example: Example) -> Example:
        channels = min(max(16, self.pair.min_channels), self.pair.max_channels)
        return Example(2, channels, 3, 5, 0.5, example.seed)

    def diagnose(self, example: Example) -> Diagnosis:
        try:
            report = self.checker.check(example, keep=True)
        except PortError as error:
            return self.diagnose_error(example, error)
        if report.passed:
            return Diagnosis(False, f"the port passes on {example}; nothing to explain")
        examples = [report]
        rich = self.richer_example(example)
        try:
            rich_report = self.checker.check(rich, keep=True)
            if not rich_report.passed:
                examples.append(rich_report)
        except PortError:
            pass
        datas = [self.checker.example_data(r.example) for r in examples]
        findings = []

        outputs = [c for c in report.comparisons if c.name.startswith("output")]
        if all(c.passed for c in outputs) and not report.passed:
            failing = ", ".join(c.name for c in report.comparisons if not c.passed)
            findings.append(
                Finding(
                    "bug only in gradients",
                    f"a bug only in gradients: the forward pass is exact (worst ratio "
                    f"{max(c.ratio for c in outputs):.2g}) but {failing} are off",
                    True,
                    max(c.ratio for c in outputs),
                )
            )
        for name, cause, _, suggestion in self.weight_hypotheses(example, datas[0]):
            results = []
            for r, d in zip(examples, datas, strict=True):
                bindings = dict((h[0], h[2]) for h in self.weight_hypotheses(r.example, d))[name]
                results.append(self._reloaded(r, d, bindings))
            findings.append(_finding(name, cause, results, suggestion))
        outputs = sum(name.startswith("output") for name in report.truth)
        variants = self.variants(example, outputs)
        for variant in variants:
            results = [self._variant(r, d, variant) for r, d in zip(examples, datas, strict=True)]
            findings.append(_finding(variant.name, variant.cause, results))
        if example.batch >= 2:  # with batch 1 nothing can leak across the batch
            for r, d in zip(examples, datas, strict=True):
                leak = self.batch_leak(r, d)
                if leak:
                    findings.append(leak)
                    break
        if not any(f.explains for f in findings):
            findings += self.pairs_of_bugs(variants, examples, datas)

        findings.sort(key=lambda f: (not f.explains, f.residual))
        for swap in self.pair.role_swaps:
            findings = _merge_swaps(swap, findings)
        explaining = [f for f in findings if f.explains]
        if explaining:
            best = explaining[0]
            cause = best.cause
            if math.isfinite(best.residual) and best.hypothesis != "bug only in gradients":
                cause += (
                    f" (the port matches this to {best.residual:.2g}x float32 noise, against "
                    f"{report.worst().ratio:.2g}x for the reference)"
                )
            others = [f.hypothesis for f in explaining[1:]]
            if others:
                cause += f"; also consistent with: {', '.join(others)}"
            return Diagnosis(True, cause, findings, best.suggestion)
        failing = [c for c in report.comparisons if not c.passed]
        worst_relative = max(c.relative_error for c in failing)
        if worst_relative < PRECISION_LIMIT:
            bits = -math.log2(max(worst_relative, 1e-30))
            cause = (
                f"a precision-level deviation: errors {report.worst().ratio:.3g}x the float32 "
                f"reference's own, yet only {worst_relative:.2g} relative (about {bits:.0f} "
                "correct bits), far below a structural bug: arithmetic in half precision "
                "(float16 eps 9.8e-4, bfloat16 7.8e-3) or a slightly scaled softmax"
            )
            findings.insert(0, Finding("precision-level deviation", cause, True, math.nan))
            return Diagnosis(True, cause, findings)
        return Diagnosis(False, _unexplained(findings, len(examples)), findings)


def _unexplained(findings: list[Finding], examples: int) -> str:
    """The closest single hypotheses with their residuals, those that explain the failing
    example but not the richer one, and how many pairs were tried."""
    singles = [f for f in findings if math.isfinite(f.residual) and not f.composed]
    if not singles:
        return "no named hypothesis applies to this module"
    text = "no named hypothesis explains it; closest: " + ", ".join(
        f"{f.hypothesis} ({f.residual:.2g}x)" for f in singles[:3]
    )
    partial = [f.hypothesis for f in singles if f.explains_failing_example]
    if partial and examples > 1:
        text += (
            f"; {', '.join(partial)} explains the failing example but not a richer one "
            "(batch 2, H != W): another bug is there too"
        )
    pairs_tried = [f for f in findings if f.composed]
    if pairs_tried:
        text += f"; no pair of known bugs explains it either ({len(pairs_tried)} tried)"
    return text


def _buffers_swapped(swap, current: list[Binding]) -> list[Binding]:
    """Each tensor ending in ``swap.first`` loaded into its sibling ``swap.second``'s
    weight and the other way round."""
    partners = {swap.first: swap.second, swap.second: swap.first}
    by_key = {b.torch_key: b for b in current}
    exchanged = []
    for b in current:
        stem, _, last = b.torch_key.rpartition(".")
        partner = by_key.get(f"{stem}.{partners[last]}") if last in partners else None
        exchanged.append(Binding(b.torch_key, partner.variable, b.layout) if partner else b)
    return exchanged


def _names_contradicted(swap, current, swapped, name_of, roles) -> str:
    """'the port's `k` computes the reference's query and its `q` the reference's key', when
    the port's names say query and key; else that its weights were assigned the other way."""
    first, second = swap.first, swap.second
    same = f" (or, the same numbers, {swap.same_as})" if swap.same_as else ""
    owners = {}
    for now, then in zip(current, swapped, strict=True):
        role, kind = reference_role(now.torch_key, roles)
        if kind == "weight" and role in (first, second):
            owners[role] = name_of(then.variable).rsplit("/", 1)[0]
    named = {role: name_role(name, roles)[0] for role, name in owners.items()}
    if set(owners) == {first, second} and named == {first: second, second: first}:
        return (
            f"the port's `{owners[first]}` computes the reference's {first} and its "
            f"`{owners[second]}` the reference's {second}: its names say the opposite. Loaded "
            f"against their names, the weights make the port match{same}; if the names are "
            "what is wrong, use the weight map below"
        )
    return (
        f"{first} and {second} are assigned the other way round: loaded into each other's "
        f"{swap.held_in}, the weights make the port match{same}; if the assignment is what is "
        "wrong, use the weight map below"
    )


def _merge_swaps(swap, findings: list[Finding]) -> list[Finding]:
    """Swapped roles in the math (``swap.variant``) and swapped names predict the same
    numbers: one finding."""
    by_name = {f.hypothesis: f for f in findings}
    math_swap = by_name.get(swap.variant)
    name_swap = by_name.get(swap.name)
    if not (math_swap and name_swap and math_swap.explains and name_swap.explains):
        return findings
    merged = Finding(
        swap.variant,
        name_swap.cause,
        True,
        min(math_swap.residual, name_swap.residual),
        name_swap.suggestion,
    )
    rest = [f for f in findings if f not in (math_swap, name_swap)]
    return [merged, *rest]


def _finding(name, cause, results, suggestion="") -> Finding:
    explains = all(ok for ok, _ in results)
    residual = max(r for _, r in results)
    return Finding(name, cause, explains, residual, suggestion if explains else "", results[0][0])


def diagnose(checker: Checker, example: Example) -> Diagnosis:
    return Diagnoser(checker).diagnose(example)
