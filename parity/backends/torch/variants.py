"""Variants of the reference: each computes what a port with one known bug computes.

The diagnosis runs them with the reference's weights and asks which one the failing port
matches. Generic variants apply to any module whose output is ``x + f(x)`` (the layout
scrambles, a missing residual, an unloaded ``gamma``) or that has several outputs (their
order); each pair's own (``parity/pairs/``) rewrite its computation. Every variant is
differentiable, so gradients are compared too.

Layouts: the reference works in NCHW. A scramble describes what a channels-last port does
to its NHWC buffer, expressed back in NCHW.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported by the pair files, which import no framework
    import torch

Forward = Callable[[Any, Any], Any]
"""(reference module, NCHW input tensor) -> output(s)."""


@dataclass(frozen=True)
class Variant:
    """The reference with a known bug: a ``parity.core.hypotheses.Hypothesis`` whose prediction
    is ``forward``. Variants compose (``compose``): one that rewrites steps of the attention
    (``steps`` into ``family``) with one that rewrites other steps, and one that wraps the
    module (``wrap``: a misread input, a missing residual) around any other."""

    key: str  # its identity (``pam.query-key-swapped``), stable when its words change
    name: str  # a few words, printed
    cause: str  # what the port gets wrong, in a sentence
    forward: Forward
    steps: tuple = ()  # ((slot, function), ...): the steps of ``family`` this bug changes
    family: Callable | None = None  # {slot: function} -> Forward
    wrap: Callable[[Forward], Forward] | None = None
    parts: tuple = ()  # the single bugs of a composition, in order


def _module(module, x):
    return module(x)


def _wrapping(key: str, name: str, cause: str, wrap) -> Variant:
    return Variant(key, name, cause, wrap(_module), wrap=wrap)


def stepped(key: str, name: str, cause: str, family, **steps) -> Variant:
    """A bug in some steps of ``family`` (``{slot: function} -> Forward``), a pair's
    forward written as named steps, so that two such bugs compose."""
    return Variant(key, name, cause, family(steps), tuple(steps.items()), family)


COUNTS = {2: "two", 3: "three"}


def compose(first: Variant, second: Variant) -> Variant | None:
    """Both bugs at once, where they touch different steps; None where they cannot. Either
    may itself be a composition (three bugs at once)."""
    if first.family is not None and first.family is second.family:
        slots = dict(first.steps)
        if set(slots) & set(dict(second.steps)):
            return None
        steps = {**slots, **dict(second.steps)}
        forward, family = first.family(steps), first.family
    elif first.wrap is not None and (second.wrap is None or first.key < second.key):
        # A wrapper around the other bug; two wrappers nest once, in key order (the generic
        # wrappers' keys sort as their names did, so the pairs tried are those of before).
        forward, steps, family = first.wrap(second.forward), {}, None
    else:
        return None
    parts = (*(first.parts or (first,)), *(second.parts or (second,)))
    if len({p.key for p in parts}) < len(parts):
        return None
    causes = [p.cause for p in parts]
    return Variant(
        "+".join(p.key for p in parts),
        " + ".join(p.name for p in parts),
        f"{COUNTS.get(len(parts), len(parts))} bugs at once: {'; '.join(causes[:-1])}; "
        f"and {causes[-1]}",
        forward,
        tuple(steps.items()),
        family,
        parts=parts,
    )


def pairs(variants: list[Variant]) -> list[Variant]:
    """Every composable pair: those within one family first (the CAM pair of softmax
    without the max-minus step and attention applied transposed among them), then a
    wrapping bug around another."""
    within, around = [], []
    for i, first in enumerate(variants):
        for second in variants[i + 1 :]:
            for a, b in ((first, second), (second, first)):
                both = compose(a, b)
                if both is not None:
                    (around if a.wrap is not None else within).append(both)
                    break
    return [*within, *around]


def triples(variants: list[Variant], limit: int) -> list[Variant]:
    """Composable triples, at most ``limit``: each pair (in the order ``pairs`` tries them)
    with a third bug, inside or around it; each set of three once."""
    found, seen = [], set()
    if limit <= 0:
        return found
    for pair in pairs(variants):
        for third in variants:
            for a, b in ((pair, third), (third, pair)):
                three = compose(a, b)
                if three is None:
                    continue
                keys = frozenset(p.key for p in three.parts)
                if keys not in seen:
                    seen.add(keys)
                    found.append(three)
                    if len(found) == limit:
                        return found
                break
    return found


# -- buffer reinterpretations (NCHW in, NCHW out) ------------------------------------------


def nhwc_buffer_read_as_nchw(x: torch.Tensor) -> torch.Tensor:
    """An NHWC buffer reshaped to (B, C, H, W) without a transpose."""
    b, c, h, w = x.shape
    return x.permute(0, 2, 3, 1).reshape(b, c, h, w)


def nchw_buffer_written_as_nhwc(y: torch.Tensor) -> torch.Tensor:
    """A (B, C, H, W) result reshaped to (B, H, W, C) without a transpose (back in NCHW)."""
    b, c, h, w = y.shape
    return y.reshape(b, h, w, c).permute(0, 3, 1, 2)


def column_major_positions(y: torch.Tensor) -> torch.Tensor:
    """Positions flattened as w * H + h, unflattened as h * W + w."""
    b, c, h, w = y.shape
    return y.transpose(2, 3).reshape(b, c, h, w)


def spatially_transposed(y: torch.Tensor) -> torch.Tensor:
    return y.transpose(2, 3)


# -- generic variants ------------------------------------------------------------------------


def _on_attention_term(scramble):
    """x + scramble(f(x) - x): the residual is right, the module's own term is scrambled."""

    def wrap(inner: Forward) -> Forward:
        def forward(module, x):
            return x + scramble(inner(module, x) - x)

        return forward

    return wrap


def _computed_on(read, write):
    """The term computed on a misread input and written back wrong; the residual right."""

    def wrap(inner: Forward) -> Forward:
        def forward(module, x):
            misread = read(x)
            return x + write(inner(module, misread) - misread)

        return forward

    return wrap


def _without_residual(inner: Forward) -> Forward:
    def forward(module, x):
        return inner(module, x) - x

    return forward


def _gamma_zero(inner: Forward) -> Forward:
    def forward(module, x):
        return x + 0.0 * inner(module, x)  # keeps the graph: every gradient exists (as zeros)

    return forward


def _gamma_one(inner: Forward) -> Forward:
    def forward(module, x):
        return x + (inner(module, x) - x) / module.gamma

    return forward


def _identity(y):
    return y


def residual_variants(square: bool, data_format: str = "channels_last") -> list[Variant]:
    """The generic variants, written for a channels-last port; a channels-first port
    misreads its buffers the other way round."""
    read, write = nhwc_buffer_read_as_nchw, nchw_buffer_written_as_nhwc
    if data_format == "channels_first":
        read, write = write, read
    variants = [
        _wrapping(
            "channels-last-read-as-nchw",
            "NHWC read as NCHW",
            "channels and positions confused: the NHWC input is reshaped to (B, C, H, W) "
            "without a transpose before the attention",
            _computed_on(read, _identity),
        ),
        _wrapping(
            "channels-last-read-as-nchw-and-written-back",
            "NHWC read as NCHW, and written back the same way",
            "channels and positions confused: the NHWC input is reshaped to (B, C, H, W) "
            "without a transpose, and the result reshaped back to NHWC the same way",
            _computed_on(read, write),
        ),
        _wrapping(
            "buffer-cn-written-as-nhwc",
            "(C, N) buffer written as NHWC",
            "the attention result, laid out as (B, C, N), is reshaped into (B, H, W, C) "
            "without a transpose",
            _on_attention_term(write),
        ),
        _wrapping(
            "positions-flattened-column-major",
            "positions flattened in the wrong order",
            "positions are flattened column-major (w * H + h) and unflattened row-major "
            "(h * W + w), or the other way round",
            _on_attention_term(column_major_positions),
        ),
        _wrapping(
            "residual-missing",
            "residual missing",
            "the residual is missing: the port returns gamma * out instead of gamma * out + x",
            _without_residual,
        ),
        _wrapping(
            "gamma-zero",
            "gamma not loaded",
            "gamma is not loaded (or not trained): the port behaves as if gamma were 0",
            _gamma_zero,
        ),
        _wrapping(
            "gamma-one",
            "gamma fixed at 1",
            "gamma is not loaded: the port behaves as if gamma were 1 (a common initial value)",
            _gamma_one,
        ),
    ]
    if square:
        variants.append(
            _wrapping(
                "spatial-axes-transposed",
                "spatial axes transposed",
                "H and W are swapped between the input and the attention result",
                _on_attention_term(spatially_transposed),
            )
        )
    return variants


def output_permutations(count: int) -> list[Variant]:
    """For a module with several outputs: the port returns them in another order."""
    from itertools import permutations

    variants = []
    for order in permutations(range(count)):
        if list(order) == list(range(count)):
            continue
        names = ", ".join(f"output[{i}]" for i in order)

        def forward(module, x, order=order):
            outputs = module(x)
            return tuple(outputs[i] for i in order)

        variants.append(
            Variant(
                f"outputs-in-order-{'-'.join(map(str, order))}",
                "outputs in another order",
                f"the outputs come in another order: the port returns ({names})",
                forward,
            )
        )
    return variants
