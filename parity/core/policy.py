"""The tolerance policy: a port is judged against float64 truth, relative to the reference.

For every tensor compared (an output, or a gradient), with ``truth`` the reference run in
float64 and ``reference`` the same reference run in float32 on the same float32 inputs,
element by element::

    e_ref     = max|reference - truth| / scale          (the reference's own error)
    bound[i]  = BOUND_DEVIATIONS * eps32 * sigma[i] / scale
    e_noise   = max|noisy - truth| / scale, the largest over a few noisy runs
    floor[i]  = max(FLOOR_ULPS * eps32, bound[i], e_noise)
    pass  iff  |port[i] - truth[i]| / scale <= FACTOR * max(e_ref, floor[i])  for every i

``sigma`` is the running error bound (``parity.backends.torch.error_bound``): the standard deviation
of a faithful float32 computation's error in each element, derived from the computation itself
(sums of many terms that cancel get a large one, well-conditioned results a few ulps, and
results below float32's smallest normal number their own size: TensorFlow flushes them to
zero, ``rounding.UNDERFLOW``).
``noisy`` is the float64 reference rerun with every intermediate result rounded at random
to float32's precision (``parity.backends.torch.rounding``), which sees what sigma cannot: one
rounding shared by many elements (a softmax row's normalisation). Both matter where a tensor comes
out of heavy cancellation (the gradient w.r.t. ``query_conv.bias`` at small input scales,
the gradient w.r.t. ``gamma``): there the float32 reference's own error is small or large
by the luck of its summation order on the machine, and a fixed number of ulps of a tiny
result is no floor at all. They cost about as much as the rest of an example, so they are
computed when some ratio without them passes a quarter of the limit (``judge``);
the ratio reported is always the one the verdict used.

``scale`` is max|truth| of the tensor. A tensor whose truth is zero at float32 resolution
of its layer (every |truth| below eps32 times the largest |truth| among the gradients of
the same layer; ``key_conv.bias`` is one: softmax ignores the per-row constant it adds) is
scaled by its layer's gradients instead, so float32 noise on an exact zero is judged as
noise, not as an infinite relative error. A layer whose true gradients are all zero (query
and key when H*W = 1: a softmax over one position has no gradient) is scaled by the largest
tensor of the example.

FACTOR, FLOOR_ULPS and BOUND_DEVIATIONS were chosen from measurements
(``docs/measurements.md``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from parity.core.errors import NoErrorRule

EPS32 = float(np.finfo(np.float32).eps)
UNIT_ROUNDOFF = {"float32": EPS32, "float16": 2.0**-10, "bfloat16": 2.0**-7}
"""The unit roundoff of each compute dtype the policy judges."""


@dataclass(frozen=True)
class TolerancePolicy:
    """``factor``, ``floor_ulps`` and ``bound_deviations`` as above; ``unit`` is the unit
    roundoff of the compute dtype (float32's by default; float16's or bfloat16's under a
    mixed-precision policy)."""

    factor: float = 16.0
    floor_ulps: float = 4.0
    unit: float = EPS32
    bound_deviations: float = 2.0

    @property
    def floor(self) -> float:
        return self.floor_ulps * self.unit

    def as_dict(self) -> dict[str, float]:
        """The policy's JSON form (reports record it whole)."""
        return asdict(self)

    def rule(self, precision: str = "float32") -> str:
        """The rule in words, for the command's table."""
        return (
            f"its error against float64 truth is at most {self.factor:g}x the reference's own "
            f"(or the {precision} floor)"
        )


DEFAULT_POLICY = TolerancePolicy()


@dataclass(frozen=True)
class TensorComparison:
    """How one tensor of the port compares with the truth, next to the reference."""

    name: str
    shape: tuple[int, ...]
    max_abs_error: float  # max|port - truth|
    relative_error: float  # e_port
    reference_error: float  # e_ref
    ratio: float  # the worst element's error over max(e_ref, its floor): what the verdict used
    allowed_ratio: float  # the policy's factor
    floor: float  # the floor at the element that set the ratio, relative to scale
    worst_index: tuple[int, ...]  # of max|port - truth|, in the reference's layout
    mismatched: int  # elements whose error exceeds what the policy allows
    scale: float
    passed: bool
    nonfinite: int = 0  # elements of the port's result that are NaN or infinite

    def as_dict(self) -> dict:
        return asdict(self)


def scale_group(name: str) -> str:
    """Tensors normalised together: the gradients of one layer's parameters."""
    if name.startswith("grad[") and name.endswith("]"):
        parameter = name[len("grad[") : -1]
        if "." in parameter:
            return "grad[" + parameter.rsplit(".", 1)[0] + ".*]"
    return name


def _scales(truth: Mapping[str, np.ndarray]) -> dict[str, float]:
    own = {name: float(np.max(np.abs(t), initial=0.0)) for name, t in truth.items()}
    group_scale: dict[str, float] = {}
    for name, value in own.items():
        group = scale_group(name)
        group_scale[group] = max(group_scale.get(group, 0.0), value)
    largest = max(own.values(), default=0.0)
    scales = {}
    for name, value in own.items():
        group = group_scale[scale_group(name)]
        if group == 0:  # the whole layer's true gradient is zero: judge it by the example's scale
            scales[name] = largest
        elif value >= EPS32 * group:
            scales[name] = value
        else:
            scales[name] = group
    return scales


def _noise(true: np.ndarray, rounding_noise, name: str, scale: float) -> float:
    """e_noise: the largest relative distance of the noisy runs from the truth."""
    moved = [
        float(np.max(np.abs(np.asarray(noisy[name], dtype=np.float64) - true), initial=0.0))
        for noisy in rounding_noise
    ]
    return _relative(max(moved, default=0.0), scale)


def floor_arguments(truth: Mapping[str, np.ndarray], floor: Mapping) -> dict:
    """compare()'s floor arguments of one example, made portable to another truth (the
    diagnosis' variants of the reference): the running error bound as it is, the noisy
    runs as the relative floors they gave against their own truth."""
    portable = {}
    if "deviations" in floor:
        portable["deviations"] = floor["deviations"]
    if floor.get("rounding_noise"):
        scales = _scales(truth)
        portable["floors"] = {
            name: _noise(np.asarray(true, np.float64), floor["rounding_noise"], name, scales[name])
            for name, true in truth.items()
        }
    return portable


def _relative(error: float, scale: float) -> float:
    if scale > 0:
        return error / scale
    return 0.0 if error == 0 else float("inf")


def compare(
    truth: Mapping[str, np.ndarray],
    reference: Mapping[str, np.ndarray],
    port: Mapping[str, np.ndarray],
    policy: TolerancePolicy = DEFAULT_POLICY,
    *,
    deviations: Mapping[str, np.ndarray] | None = None,
    rounding_noise: Sequence[Mapping[str, np.ndarray]] = (),
    floors: Mapping[str, float] | None = None,
) -> list[TensorComparison]:
    """Compare every tensor of ``truth`` (all in the reference's layout).

    ``deviations`` holds the running error bound of every tensor
    (``parity.backends.torch.error_bound``: per element, in units of ``policy.unit``);
    ``rounding_noise`` runs of the reference under simulated rounding, for a reference the bound has
    no rule for; ``floors`` a relative floor per tensor. Without any of them the floor is FLOOR_ULPS
    alone.
    """
    scales = _scales(truth)
    comparisons = []
    for name, true in truth.items():
        true = np.asarray(true, dtype=np.float64)
        ref = np.asarray(reference[name], dtype=np.float64)
        got = np.asarray(port[name], dtype=np.float64)
        if got.shape != true.shape:
            raise ValueError(
                f"{name}: the port's shape {got.shape} differs from the reference's "
                f"{true.shape} (after conversion to the reference's layout)"
            )
        scale = scales[name]
        port_diff = np.abs(got - true)
        nonfinite = int(np.count_nonzero(~np.isfinite(got)))
        if nonfinite:
            port_diff = np.where(np.isfinite(got), port_diff, np.inf)
        # The reference's own error where it has one: a float16 reference overflows where
        # the truth is large (the whole DANet at scale 10), and an overflow is no unit.
        reference_diff = np.abs(ref - true)
        reference_diff = reference_diff[np.isfinite(reference_diff)]
        e_ref = _relative(float(np.max(reference_diff, initial=0.0)), scale)
        e_floor = max(policy.floor, (floors or {}).get(name, 0.0))
        e_floor = max(e_floor, _noise(true, rounding_noise, name, scale))
        # What the port may err by, per element, in units of the factor: the reference's
        # own error, the floor, and the element's running error bound.
        unit_error = np.full(true.shape, max(e_ref, e_floor) * scale)
        if deviations is not None:
            bound = policy.bound_deviations * policy.unit * np.asarray(deviations[name])
            unit_error = np.maximum(unit_error, bound)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios = np.where(port_diff == 0, 0.0, port_diff / unit_error)
        worst = np.unravel_index(np.argmax(ratios), ratios.shape) if true.size else ()
        ratio = float(ratios[worst]) if true.size else 0.0
        comparisons.append(
            TensorComparison(
                name=name,
                shape=tuple(true.shape),
                max_abs_error=float(np.max(port_diff, initial=0.0)),
                relative_error=_relative(float(np.max(port_diff, initial=0.0)), scale),
                reference_error=e_ref,
                ratio=ratio,
                allowed_ratio=policy.factor,
                floor=_relative(float(unit_error[worst]), scale) if true.size else e_floor,
                worst_index=tuple(int(i) for i in worst),
                mismatched=int(np.count_nonzero(ratios > policy.factor)),
                scale=scale,
                passed=bool(ratio <= policy.factor),
                nonfinite=nonfinite,
            )
        )
    return comparisons


ROUNDING_NOISE_DRAWS = 3
"""Simulated float32 runs per example. One draw of random rounding lands near the truth by
chance now and then (a one-element tensor such as grad[gamma] is a single draw): the floor
takes the largest of three."""

NEAR_LIMIT = 0.25
"""Share of the allowed factor past which a tensor's ratio is taken against the full floor
(its running error bound and simulated rounding cost about as much as the rest of an
example)."""

Results = dict[str, np.ndarray]


def judge(
    truth: Results,
    reference: Results,
    port: Results,
    policy: TolerancePolicy,
    deviations: Callable[[], Results],
    noisy_truth: Callable[[int], Results],
    *,
    seed: int,
) -> tuple[list[TensorComparison], dict]:
    """compare(), with the rounding floor wherever it can matter: when some tensor's ratio
    without it passes NEAR_LIMIT of the allowed factor, the floor takes in the running error
    bound of every element (``deviations()``, ``parity.backends.torch.error_bound``: errors
    that add up independently, as in long sums that cancel; it raises NoErrorRule where it
    has no rule) and ROUNDING_NOISE_DRAWS reruns of the truth under simulated rounding
    (``noisy_truth(seed)``, ``parity.backends.torch.rounding``: errors that one rounding
    spreads over many elements, such as a softmax row's normalisation). The floor can only
    lower a ratio, so every ratio near or past the limit is against the full floor, and the
    ratio reported is always the one the verdict used. Returns the comparisons and
    compare()'s floor arguments (for the diagnosis)."""
    comparisons = compare(truth, reference, port, policy)
    if all(c.ratio <= NEAR_LIMIT * policy.factor for c in comparisons):
        return comparisons, {}
    floor = {"rounding_noise": [noisy_truth(seed + draw) for draw in range(ROUNDING_NOISE_DRAWS)]}
    with contextlib.suppress(NoErrorRule):
        floor["deviations"] = deviations()
    return compare(truth, reference, port, policy, **floor), floor


def describe_failures(comparisons: list[TensorComparison], precision: str = "float32") -> str:
    """One line per failing tensor, naming where its worst element is (``precision``: the
    compute dtype the policy judged)."""
    lines = []
    for c in comparisons:
        if c.passed:
            continue
        if c.nonfinite:
            lines.append(
                f"{c.name}: {c.nonfinite} of {int(np.prod(c.shape))} elements of the port's "
                f"result are NaN or infinite where the truth is finite (the first at index "
                f"{c.worst_index} of shape {c.shape})"
            )
            continue
        lines.append(
            f"{c.name}: error {c.relative_error:.3g} of scale {c.scale:.3g} is "
            f"{c.ratio:.3g}x what {precision} may err there (the reference's own error or the "
            f"rounding floor; allowed {c.allowed_ratio:g}x); "
            f"{c.mismatched} of {int(np.prod(c.shape))} elements off, max abs error "
            f"{c.max_abs_error:.3g} at index {c.worst_index} of shape {c.shape}"
        )
    return "\n".join(lines)
