"""A port that could not be compared: its error explained by its type.

A crash (``PortCrashed``) is explained by the shapes it needs: the same port is run on
nearby shapes (H == W, sides above 1, batch 2, larger maps) to find the one it cannot
take. A tensor of the wrong shape (``OutputShapeMismatch``) is explained by how its shape
differs (H and W swapped, 'valid' padding). Weights it cannot hold (``WeightsNotHeld``)
and missing outputs are their own diagnosis: the error says it all.
"""

from __future__ import annotations

from collections.abc import Callable

from parity.core.errors import OutputShapeMismatch, PortCrashed, PortError
from parity.core.strategies import Example
from parity.diagnosis.findings import Diagnosis
from parity.run.engine import Checker


def explain_error(checker: Checker, example: Example, error: PortError) -> Diagnosis:
    """The explainer registered for the error's type (or its nearest base); an error no
    explainer knows is restated."""
    for kind in type(error).__mro__:
        explain = EXPLAINERS.get(kind)
        if explain is not None:
            return explain(checker, example, error)
    return restated(error)


def restated(error: PortError) -> Diagnosis:
    return Diagnosis(True, str(error), restates_error=True)


def _runs(checker: Checker, example: Example) -> bool:
    """Whether the whole procedure that crashed (forward and gradients) runs here: a port
    whose backward pass crashes on every shape must not be said to need a shape because its
    forward pass alone runs."""
    try:
        checker.check(example)
    except PortError:
        return False
    return True


def explain_crash(checker: Checker, example: Example, error: PortCrashed) -> Diagnosis:
    """The shapes the port needs: it runs where H == W, or where no side is 1, or with
    batch 2; or, on larger maps, it runs and returns a shape that says what it does."""
    h, w = example.height, example.width
    findings = []
    if h != w and _runs(checker, example._replace(height=max(h, w), width=max(h, w))):
        findings.append(
            f"the port crashes when H != W and runs when H == W ({max(h, w)}x{max(h, w)}): "
            "it takes H where W belongs, or the reverse"
        )
    if not findings and 1 in (h, w):
        larger = example._replace(height=max(h, 2), width=max(w, 2) + (h == w))
        if _runs(checker, larger):
            findings.append("the port crashes when H or W is 1 and runs on larger maps")
    if not findings and example.batch == 1 and _runs(checker, example._replace(batch=2)):
        findings.append("the port crashes with batch 1 and runs with batch 2")
    if not findings:
        larger = example._replace(height=max(h, 5), width=max(w, 6))
        try:
            checker.check(larger, gradients=False)
        except OutputShapeMismatch as other:
            found = explain_shapes(checker, larger, other)
            if not found.restates_error:
                return Diagnosis(True, f"{found.cause}; on smaller maps it crashes")
        except PortError:
            pass
    if not findings:
        return Diagnosis(True, f"the port crashes on this input: {error}", restates_error=True)
    return Diagnosis(True, "; ".join(findings))


def explain_shapes(checker: Checker, example: Example, error: OutputShapeMismatch) -> Diagnosis:
    """H and W swapped, or maps that come out smaller by the same number of pixels on both
    sides (no padding); otherwise the error itself."""
    got, expected = error.port_shape, error.reference_shape
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
    return restated(error)


EXPLAINERS: dict[type[PortError], Callable[[Checker, Example, PortError], Diagnosis]] = {
    PortCrashed: explain_crash,
    OutputShapeMismatch: explain_shapes,
}
"""Error type -> its explainer; any other PortError (weights the port cannot hold, outputs
it does not produce) is restated."""
