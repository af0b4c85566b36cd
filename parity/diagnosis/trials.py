"""Hypotheses tested against a failing port, on each failing example.

A hypothesis explains the failure when the port matches its prediction within the
tolerance policy, on the failing example and on a richer one (batch 2, H != W), so that a
coincidence on a tiny shape does not count. "How well" is the worst error ratio of the port
against the prediction (1 means float32 noise).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from parity.backends.torch.variants import Variant, pairs, triples
from parity.core.errors import PortError
from parity.core.hypotheses import BATCH_LEAK, NONDETERMINISTIC, Assigned, Reassignment
from parity.core.policy import compare, floor_arguments
from parity.core.strategies import ExampleData
from parity.diagnosis.findings import Finding, finding
from parity.run.engine import Checker, ExampleReport

Result = tuple[bool, float]  # (the port matches the prediction, its worst ratio against it)


TRIPLES_TRIED = 300
"""At most this many triples of known bugs per diagnosis, each one run of the reference on
the failing example: PAM has 221 and CAM 156, which add 0.5-0.7 s and 0.2 s to a diagnosis
that nothing explains (2 cores, Dec 2026)."""


@dataclass(frozen=True)
class Failing:
    """A failing example: its report (with the arrays kept) and its data."""

    report: ExampleReport
    data: ExampleData


class Trials:
    """Runs each kind of hypothesis' prediction and compares the port with it."""

    def __init__(self, checker: Checker):
        self.checker = checker
        self.pair = checker.pair
        self.policy = checker.policy

    def _residual(self, report: ExampleReport, truth, reference, port) -> Result:
        # The floor of the example checked (the variant's truth differs little where the
        # variant explains the failure, which is what this asks).
        floor = floor_arguments(report.truth, report.floor or {})
        comparisons = compare(truth, reference, port, self.policy, **floor)
        return all(c.passed for c in comparisons), max(c.ratio for c in comparisons)

    # -- the reference with a bug ---------------------------------------------------------
    def variant(self, failing: Failing, variant: Variant) -> Result:
        report, data = failing.report, failing.data
        example, gradients = report.example, "grad[input]" in report.truth
        run = self.checker.run_reference
        try:
            truth = run(example, data, "float64", gradients, forward=variant.forward)
            reference = run(example, data, "float32", gradients, forward=variant.forward)
        except RuntimeError:  # the variant does not apply to this shape
            return False, math.inf
        if set(truth) != set(report.port) or any(
            np.shape(truth[k]) != np.shape(report.port[k]) for k in truth
        ):
            return False, math.inf
        return self._residual(report, truth, reference, report.port)

    def variants(self, variants: list[Variant], failings: list[Failing]) -> list[Finding]:
        return [finding(v, v.cause, [self.variant(f, v) for f in failings]) for v in variants]

    def pairs_of_bugs(self, variants: list[Variant], failings: list[Failing]) -> list[Finding]:
        """Two known bugs at once, tried when no single one explains the failure; stops at
        the first pair that does. A pair is run on the richer example only once it
        explains the failing one."""
        return self._combined(pairs(variants), failings)

    def triples_of_bugs(self, variants: list[Variant], failings: list[Failing]) -> list[Finding]:
        """Three known bugs at once, tried when no pair explains the failure, at most
        TRIPLES_TRIED of them, in the order pairs are tried (``variants.triples``)."""
        return self._combined(triples(variants, TRIPLES_TRIED), failings)

    def _combined(self, combinations: list[Variant], failings: list[Failing]) -> list[Finding]:
        findings = []
        for both in combinations:
            results = [self.variant(failings[0], both)]
            if results[0][0]:
                results += [self.variant(f, both) for f in failings[1:]]
            found = replace(finding(both, both.cause, results), composed=True)
            findings.append(found)
            if found.explains:
                break
        return findings

    # -- the port reloaded ----------------------------------------------------------------
    def assigned(self, failing: Failing) -> Assigned:
        """How the port's weights are assigned on this example now."""
        example, data = failing.report.example, failing.data
        instance = self.checker.port_for(example, data)
        return Assigned(
            self.checker.bindings(instance, example.channels),
            instance,
            data.state,
            self.pair.roles,
            tuple(self.checker.declared_absent),
        )

    def reloaded(self, failing: Failing, bindings) -> Result:
        report = failing.report
        gradients = "grad[input]" in report.truth
        try:
            port = self.checker.run_port(report.example, failing.data, gradients, bindings=bindings)
        except (PortError, ValueError):
            return False, math.inf
        return self._residual(report, report.truth, report.reference, port)

    def reassignments(
        self, reassignments: list[Reassignment], failings: list[Failing]
    ) -> list[Finding]:
        """Each reassignment that arises for the port on the failing example, tried on
        every failing example (its cause and weight map: the failing example's)."""
        assigned = [self.assigned(f) for f in failings]
        findings = []
        for hypothesis in reassignments:
            first = hypothesis.rebind(assigned[0])
            if first is None:
                continue
            results = []
            for failing, now in zip(failings, assigned, strict=True):
                rebinding = hypothesis.rebind(now)
                results.append(
                    (False, math.inf)
                    if rebinding is None
                    else self.reloaded(failing, rebinding.bindings)
                )
            findings.append(finding(hypothesis, first.cause, results, first.suggestion))
        return findings

    # -- an experiment: the same call twice ------------------------------------------------
    def nondeterministic(self, failings: list[Failing]) -> Finding | None:
        """Do two calls on the same input and weights give other outputs, on any failing
        example? (On a minimal one, a random op may happen to do the same twice.)"""
        moved, scale = 0.0, 1.0
        for failing in failings:
            example, data = failing.report.example, failing.data
            first = self.checker.run_port(example, data, gradients=False)
            second = self.checker.run_port(example, data, gradients=False)
            moved = max(float(np.max(np.abs(first[k] - second[k]), initial=0.0)) for k in first)
            scale = max(float(np.max(np.abs(first[k]), initial=0.0)) for k in first) or 1.0
            if moved / scale > self.policy.factor * self.policy.floor:
                break
        else:
            return None
        cause = (
            f"nondeterministic: two calls on the same input and weights differ by "
            f"{moved / scale:.2g} of the output's scale: dropout or a random op left on in "
            "call() (keras.layers.Dropout is turned off for the check; a random op or "
            "keras.random.dropout in call() is not)"
        )
        return Finding(NONDETERMINISTIC, cause, True, math.inf)

    # -- an experiment: does sample 0 change sample 1? ------------------------------------
    def batch_leak(self, failing: Failing) -> Finding | None:
        """Does sample 0 change sample 1's output? Is the port right on batch 1?"""
        example, data = failing.report.example, failing.data
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
        return Finding(BATCH_LEAK, cause, singles.passed, singles.worst().ratio)
