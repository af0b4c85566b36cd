"""Variants of the reference: each computes what a port with one known bug computes.

The diagnosis runs them with the reference's weights and asks which one the failing port
matches. Generic variants apply to any module whose output is ``x + f(x)`` (the layout
scrambles, a missing residual, an unloaded ``gamma``); the PAM and CAM variants rewrite the
attention itself. Every variant is differentiable, so gradients are compared too.

Layouts: the reference works in NCHW. A scramble describes what a channels-last port does
to its NHWC buffer, expressed back in NCHW.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

Forward = Callable[[torch.nn.Module, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Variant:
    """The reference with a known bug. Variants compose (``compose``): one that rewrites
    steps of the attention (``steps`` into ``family``) with one that rewrites other steps,
    and one that wraps the module (``wrap``: a misread input, a missing residual) around
    any other."""

    name: str
    cause: str  # what the port gets wrong, in a sentence
    forward: Forward
    steps: tuple = ()  # ((slot, function), ...): the steps of ``family`` this bug changes
    family: Callable | None = None  # {slot: function} -> Forward
    wrap: Callable[[Forward], Forward] | None = None


def _module(module, x):
    return module(x)


def _wrapping(name: str, cause: str, wrap) -> Variant:
    return Variant(name, cause, wrap(_module), wrap=wrap)


def _stepped(name: str, cause: str, family, **steps) -> Variant:
    return Variant(name, cause, family(steps), tuple(steps.items()), family)


def compose(first: Variant, second: Variant) -> Variant | None:
    """Both bugs at once, where they touch different steps; None where they cannot."""
    if first.family is not None and first.family is second.family:
        slots = dict(first.steps)
        if set(slots) & set(dict(second.steps)):
            return None
        forward = first.family({**slots, **dict(second.steps)})
    elif first.wrap is not None and (second.wrap is None or first.name < second.name):
        # A wrapper around the other bug; two wrappers nest once, in name order.
        forward = first.wrap(second.forward)
    else:
        return None
    return Variant(
        f"{first.name} + {second.name}",
        f"two bugs at once: {first.cause}; and {second.cause}",
        forward,
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
            "NHWC read as NCHW",
            "channels and positions confused: the NHWC input is reshaped to (B, C, H, W) "
            "without a transpose before the attention",
            _computed_on(read, _identity),
        ),
        _wrapping(
            "NHWC read as NCHW, and written back the same way",
            "channels and positions confused: the NHWC input is reshaped to (B, C, H, W) "
            "without a transpose, and the result reshaped back to NHWC the same way",
            _computed_on(read, write),
        ),
        _wrapping(
            "(C, N) buffer written as NHWC",
            "the attention result, laid out as (B, C, N), is reshaped into (B, H, W, C) "
            "without a transpose",
            _on_attention_term(write),
        ),
        _wrapping(
            "positions flattened in the wrong order",
            "positions are flattened column-major (w * H + h) and unflattened row-major "
            "(h * W + w), or the other way round",
            _on_attention_term(column_major_positions),
        ),
        _wrapping(
            "residual missing",
            "the residual is missing: the port returns gamma * out instead of gamma * out + x",
            _without_residual,
        ),
        _wrapping(
            "gamma not loaded",
            "gamma is not loaded (or not trained): the port behaves as if gamma were 0",
            _gamma_zero,
        ),
        _wrapping(
            "gamma fixed at 1",
            "gamma is not loaded: the port behaves as if gamma were 1 (a common initial value)",
            _gamma_one,
        ),
    ]
    if square:
        variants.append(
            _wrapping(
                "spatial axes transposed",
                "H and W are swapped between the input and the attention result",
                _on_attention_term(spatially_transposed),
            )
        )
    return variants


# -- PAM ------------------------------------------------------------------------------------


def _pam_parts(module, x):
    b, _, h, w = x.shape
    query = module.query_conv(x).reshape(b, -1, h * w).permute(0, 2, 1)  # (B, N, C')
    key = module.key_conv(x).reshape(b, -1, h * w)  # (B, C', N)
    value = module.value_conv(x).reshape(b, -1, h * w)  # (B, C, N)
    return query, key, value


def _pam_family(steps: dict) -> Forward:
    """PAM with some of its steps (energy, attend, apply) replaced."""
    energy_of = steps.get("energy", torch.bmm)
    attend = steps.get("attend", _softmax_last)
    apply = steps.get("apply", _bmm_t)

    def forward(module, x):
        query, key, value = _pam_parts(module, x)
        attention = attend(energy_of(query, key))
        return module.gamma * apply(value, attention).reshape(x.shape) + x

    return forward


def _softmax_last(energy):
    return torch.softmax(energy, dim=-1)


def _softmax_first(energy):
    return torch.softmax(energy, dim=1)


def _key_query_energy(query, key):
    return torch.bmm(key.permute(0, 2, 1), query.permute(0, 2, 1))


def _bmm_t(a, b):
    return torch.bmm(a, b.permute(0, 2, 1))


def _pam_mixed_batch(module, x):
    b, c, h, w = x.shape
    query, key, value = _pam_parts(module, x)
    query = query.reshape(1, b * h * w, -1)
    key = key.permute(0, 2, 1).reshape(1, b * h * w, -1).permute(0, 2, 1)
    value = value.permute(0, 2, 1).reshape(1, b * h * w, c).permute(0, 2, 1)
    attention = torch.softmax(torch.bmm(query, key), dim=-1)
    out = torch.bmm(value, attention.permute(0, 2, 1))  # (1, C, B*N)
    out = out.reshape(c, b, h * w).permute(1, 0, 2).reshape(x.shape)
    return module.gamma * out + x


def _pam_convs_read_as_nchw(module, x):
    b, _, h, w = x.shape

    def misread(t):  # an NHWC conv output reshaped to (B, C', N) without a transpose
        return nhwc_buffer_read_as_nchw(t).reshape(b, t.shape[1], h * w)

    query = misread(module.query_conv(x)).permute(0, 2, 1)
    key, value = misread(module.key_conv(x)), misread(module.value_conv(x))
    attention = torch.softmax(torch.bmm(query, key), dim=-1)
    out = torch.bmm(value, attention.permute(0, 2, 1)).reshape(x.shape)  # (B, C, N) buffer
    return module.gamma * nchw_buffer_written_as_nhwc(out) + x


PAM_VARIANTS = [
    Variant(
        "NHWC read as NCHW",
        "channels and positions confused: NHWC tensors are reshaped to (B, C, N) without a "
        "transpose (B, C, H, W = x.shape unpacked on an NHWC tensor), and the (B, C, N) "
        "result reshaped into NHWC the same way",
        _pam_convs_read_as_nchw,
    ),
    _stepped(
        "softmax over the wrong axis",
        "the softmax normalises over the query positions (axis 1) instead of the key "
        "positions (the last axis)",
        _pam_family,
        attend=_softmax_first,
    ),
    _stepped(
        "attention applied transposed",
        "the attention matrix is applied untransposed: out = value @ attention instead of "
        "value @ attention^T",
        _pam_family,
        apply=torch.bmm,
    ),
    _stepped(
        "query and key swapped",
        "query and key play each other's role in the energy (energy = key^T query)",
        _pam_family,
        energy=_key_query_energy,
    ),
    Variant(
        "attention mixed across the batch",
        "information leaks across the batch: positions of all samples attend to each other "
        "(right only when batch == 1)",
        _pam_mixed_batch,
    ),
]


# -- CAM ------------------------------------------------------------------------------------


def _cam_family(steps: dict) -> Forward:
    """CAM with some of its steps (energy, attend, apply) replaced."""
    energy_of = steps.get("energy", _gram)
    attend = steps.get("attend", _max_minus)
    apply = steps.get("apply", torch.bmm)

    def forward(module, x):
        b, c = x.shape[:2]
        features = x.reshape(b, c, -1)  # (B, C, N)
        attention = attend(energy_of(features))
        return module.gamma * apply(attention, features).reshape(x.shape) + x

    return forward


def _gram(features):
    return torch.bmm(features, features.permute(0, 2, 1))


def _max_minus(energy, dim=-1):
    return torch.softmax(energy.amax(dim=-1, keepdim=True) - energy, dim=dim)


def _cam_mixed_batch(features):
    gram = torch.einsum("bcn,bdn->cd", features, features)
    return gram.expand(features.shape[0], *gram.shape)


def _max_minus_first(energy):
    return _max_minus(energy, dim=1)


def _applied_transposed(attention, features):
    return torch.bmm(attention.permute(0, 2, 1), features)


CAM_VARIANTS = [
    _stepped(
        "softmax over the wrong axis",
        "the softmax normalises over axis 1 of the (B, C, C) energy instead of the last axis",
        _cam_family,
        attend=_max_minus_first,
    ),
    _stepped(
        "attention applied transposed",
        "the attention matrix is applied transposed: out = attention^T @ x",
        _cam_family,
        apply=_applied_transposed,
    ),
    _stepped(
        "CAM without the max-minus step",
        "the max-minus step is missing: softmax(energy) instead of softmax(rowmax - energy), "
        "which is softmax(-energy)",
        _cam_family,
        attend=_softmax_last,
    ),
    _stepped(
        "attention mixed across the batch",
        "information leaks across the batch: one Gram matrix summed over all samples "
        "(right only when batch == 1)",
        _cam_family,
        energy=_cam_mixed_batch,
    ),
]


# -- the DANet head -------------------------------------------------------------------------


def _head(*, eps=None, relu_missing="", relu_before="") -> Forward:
    """The head's forward (evaluation mode) with one of its blocks changed."""
    from torch.nn import functional as F  # noqa: N812

    def block(module, name, x):
        conv, norm = getattr(module, name)[0], getattr(module, name)[1]
        y = conv(x)
        if relu_before == name:
            y = torch.relu(y)
        y = F.batch_norm(
            y,
            norm.running_mean,
            norm.running_var,
            norm.weight,
            norm.bias,
            training=False,
            eps=norm.eps if eps is None else eps,
        )
        return y if relu_missing == name or relu_before == name else torch.relu(y)

    def forward(module, x):
        sa_conv = block(module, "conv51", module.sa(block(module, "conv5a", x)))
        sc_conv = block(module, "conv52", module.sc(block(module, "conv5c", x)))
        return module.conv8(sa_conv + sc_conv), module.conv6(sa_conv), module.conv7(sc_conv)

    return forward


HEAD_BLOCKS = ("conv5a", "conv5c", "conv51", "conv52")
HEAD_VARIANTS = [
    Variant(
        "BatchNorm epsilon at Keras' default",
        "BatchNorm uses Keras' default epsilon 1e-3 where PyTorch's is 1e-5",
        _head(eps=1e-3),
    ),
    *(
        Variant(
            f"ReLU missing after {name}'s norm",
            f"the ReLU after {name}'s BatchNorm is missing",
            _head(relu_missing=name),
        )
        for name in HEAD_BLOCKS
    ),
    *(
        Variant(
            f"ReLU before {name}'s norm",
            f"{name} applies its ReLU before the BatchNorm instead of after it",
            _head(relu_before=name),
        )
        for name in HEAD_BLOCKS
    ),
]


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
                "outputs in another order",
                f"the outputs come in another order: the port returns ({names})",
                forward,
            )
        )
    return variants
