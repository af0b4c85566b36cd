"""When parity fails, say why: test the known hypotheses against the failing example.

A port that could not be compared (it crashed, returned the wrong shape, cannot hold the
weights) is explained by its error's type (``parity.diagnosis.crashes``). A port that computes
something else is tested against every hypothesis that applies (``parity.core.hypotheses``):
the pair's variants of the reference and the generic ones (``parity.backends.torch.variants``), its
weights assigned another way (``parity.diagnosis.reassignments``), a probe of the batch, and, when
no single bug explains the failure, pairs of bugs (``parity.diagnosis.trials``). The pattern of the
failing tensors can say enough alone (``parity.diagnosis.patterns``); the conclusion is worded in
``parity.diagnosis.findings``.
"""

from __future__ import annotations

from parity.backends.torch.variants import Variant, output_permutations, residual_variants
from parity.core.errors import PortError
from parity.core.hypotheses import Reassignment
from parity.core.strategies import Example
from parity.diagnosis.crashes import explain_error
from parity.diagnosis.findings import Diagnosis, Finding, explained, merge_same_numbers, unexplained
from parity.diagnosis.patterns import gradients_only, precision_level
from parity.diagnosis.reassignments import KERNEL_LAYOUTS
from parity.diagnosis.trials import Failing, Trials
from parity.run.engine import Checker

__all__ = ["Diagnoser", "Diagnosis", "Finding", "diagnose"]


class Diagnoser:
    """Which hypotheses apply to a pair, on which examples, in which order."""

    def __init__(self, checker: Checker):
        self.checker = checker
        self.pair = checker.pair
        self.trials = Trials(checker)

    def variants(self, example: Example, outputs: int = 1) -> list[Variant]:
        """The generic variants that apply to this pair and example, then the pair's own."""
        variants = []
        if self.pair.residual:
            variants += residual_variants(
                square=example.height == example.width, data_format=self.pair.data_format
            )
        if outputs > 1:
            variants += output_permutations(outputs)
        return [*variants, *self.pair.variants]

    def reassignments(self) -> list[Reassignment]:
        """The pair's role swaps, the kernel layouts, the pair's buffer swaps."""
        return [*self.pair.role_swaps, *KERNEL_LAYOUTS, *self.pair.buffer_swaps]

    def diagnose(self, example: Example) -> Diagnosis:
        try:
            report = self.checker.check(example, keep=True)
        except PortError as error:
            return explain_error(self.checker, example, error)
        if report.passed:
            return Diagnosis(False, f"the port passes on {example}; nothing to explain")
        reports = [report]
        try:
            rich_report = self.checker.check(self.pair.richer_example(example.seed, 0.5), keep=True)
            if not rich_report.passed:
                reports.append(rich_report)
        except PortError:
            pass
        failings = [Failing(r, self.checker.example_data(r.example)) for r in reports]
        moving = self.trials.nondeterministic(failings)
        if moving is not None:  # no hypothesis can be judged on numbers that move
            return Diagnosis(True, moving.cause, [moving])

        findings = [f for f in (gradients_only(report),) if f is not None]
        findings += self.trials.reassignments(self.reassignments(), failings)
        outputs = sum(name.startswith("output") for name in report.truth)
        variants = self.variants(example, outputs)
        findings += self.trials.variants(variants, failings)
        if example.batch >= 2:  # with batch 1 nothing can leak across the batch
            leak = next(filter(None, (self.trials.batch_leak(f) for f in failings)), None)
            if leak:
                findings.append(leak)
        if not any(f.explains for f in findings):
            findings += self.trials.pairs_of_bugs(variants, failings)
        if not any(f.explains for f in findings):
            findings += self.trials.triples_of_bugs(variants, failings)
        return self.conclude(report, findings, len(reports))

    def conclude(self, report, findings: list[Finding], examples: int) -> Diagnosis:
        """The best explaining finding; else a precision-level deviation; else the closest
        hypotheses."""
        findings = sorted(findings, key=lambda f: (not f.explains, f.residual))
        for swap in self.pair.role_swaps:
            findings = merge_same_numbers(swap, findings)
        explaining = [f for f in findings if f.explains]
        if explaining:
            return explained(explaining, report.worst().ratio, findings)
        precision = precision_level(report)
        if precision is not None:
            return Diagnosis(True, precision.cause, [precision, *findings])
        return Diagnosis(False, unexplained(findings, examples, report.worst().ratio), findings)


def diagnose(checker: Checker, example: Example) -> Diagnosis:
    return Diagnoser(checker).diagnose(example)
