"""DANet's position attention module (PAM): ``reference_torch.PAM_Module`` against
``impl_keras.PositionAttention``.

Fu et al., "Dual Attention Network for Scene Segmentation", CVPR 2019: each position
attends to every other through query and key 1x1 convolutions (C -> C/8), the softmax over
the key positions weighs the values (C -> C), and ``gamma`` scales the result added to x.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from parity.backends.torch.variants import (
    Variant,
    nchw_buffer_written_as_nhwc,
    nhwc_buffer_read_as_nchw,
    stepped,
)
from parity.core.layout import SCALAR, Binding, conv_bindings
from parity.core.registry import BenchSpec, CheckpointSpec, LeanBench, PairDefinition
from parity.core.sizes import ModuleSize

ROLES = (
    ("query", frozenset({"query", "q"})),
    ("key", frozenset({"key", "k"})),
    ("value", frozenset({"value", "v"})),
    ("gamma", frozenset({"gamma", "alpha", "beta", "scale"})),
)
"""The words DANet ports use for the attention's parameters (``self.q``, ``self.alpha``)."""

SIZE = ModuleSize(8, lambda b, c, h, w: b * (h * w) ** 2)  # (B, H*W, H*W) attention
"""Query and key have C // 8 channels, so C >= 8."""


def bindings(layer) -> list[Binding]:
    """``PositionAttention``'s weights as the reference's parameters."""
    return [
        *conv_bindings("query_conv", layer.query_conv),
        *conv_bindings("key_conv", layer.key_conv),
        *conv_bindings("value_conv", layer.value_conv),
        Binding("gamma", layer.gamma, SCALAR),
    ]


# -- bug hypotheses: PAM with one step changed (NCHW tensors, the reference's weights) ------


def _parts(module, x):
    b, _, h, w = x.shape
    query = module.query_conv(x).reshape(b, -1, h * w).permute(0, 2, 1)  # (B, N, C')
    key = module.key_conv(x).reshape(b, -1, h * w)  # (B, C', N)
    value = module.value_conv(x).reshape(b, -1, h * w)  # (B, C, N)
    return query, key, value


def _bmm(a, b):
    return a.bmm(b)


def _bmm_t(a, b):
    return a.bmm(b.permute(0, 2, 1))


def _softmax_last(energy):
    return energy.softmax(dim=-1)


def _softmax_first(energy):
    return energy.softmax(dim=1)


def _key_query_energy(query, key):
    return key.permute(0, 2, 1).bmm(query.permute(0, 2, 1))


def _family(steps: dict):
    """PAM with some of its steps (energy, attend, apply) replaced."""
    energy_of = steps.get("energy", _bmm)
    attend = steps.get("attend", _softmax_last)
    apply = steps.get("apply", _bmm_t)

    def forward(module, x):
        query, key, value = _parts(module, x)
        attention = attend(energy_of(query, key))
        return module.gamma * apply(value, attention).reshape(x.shape) + x

    return forward


def _mixed_batch(module, x):
    b, c, h, w = x.shape
    query, key, value = _parts(module, x)
    query = query.reshape(1, b * h * w, -1)
    key = key.permute(0, 2, 1).reshape(1, b * h * w, -1).permute(0, 2, 1)
    value = value.permute(0, 2, 1).reshape(1, b * h * w, c).permute(0, 2, 1)
    attention = query.bmm(key).softmax(dim=-1)
    out = value.bmm(attention.permute(0, 2, 1))  # (1, C, B*N)
    out = out.reshape(c, b, h * w).permute(1, 0, 2).reshape(x.shape)
    return module.gamma * out + x


def _convs_read_as_nchw(module, x):
    b, _, h, w = x.shape

    def misread(t):  # an NHWC conv output reshaped to (B, C', N) without a transpose
        return nhwc_buffer_read_as_nchw(t).reshape(b, t.shape[1], h * w)

    query = misread(module.query_conv(x)).permute(0, 2, 1)
    key, value = misread(module.key_conv(x)), misread(module.value_conv(x))
    attention = query.bmm(key).softmax(dim=-1)
    out = value.bmm(attention.permute(0, 2, 1)).reshape(x.shape)  # (B, C, N) buffer
    return module.gamma * nchw_buffer_written_as_nhwc(out) + x


QUERY_KEY_SWAPPED = stepped(
    "pam.query-key-swapped",
    "query and key swapped",
    "query and key play each other's role in the energy (energy = key^T query)",
    _family,
    energy=_key_query_energy,
)
"""Also what a port whose query and key convolutions are named the other way round computes
(``role_swaps``): the two findings are merged."""

VARIANTS = (
    Variant(
        "pam.nhwc-read-as-nchw",
        "NHWC read as NCHW",
        "channels and positions confused: NHWC tensors are reshaped to (B, C, N) without a "
        "transpose (B, C, H, W = x.shape unpacked on an NHWC tensor), and the (B, C, N) "
        "result reshaped into NHWC the same way",
        _convs_read_as_nchw,
    ),
    stepped(
        "pam.softmax-over-queries",
        "softmax over the wrong axis",
        "the softmax normalises over the query positions (axis 1) instead of the key "
        "positions (the last axis)",
        _family,
        attend=_softmax_first,
    ),
    stepped(
        "pam.attention-untransposed",
        "attention applied transposed",
        "the attention matrix is applied untransposed: out = value @ attention instead of "
        "value @ attention^T",
        _family,
        apply=_bmm,
    ),
    QUERY_KEY_SWAPPED,
    Variant(
        "pam.attention-across-batch",
        "attention mixed across the batch",
        "information leaks across the batch: positions of all samples attend to each other "
        "(right only when batch == 1)",
        _mixed_batch,
    ),
)


def role_swaps():
    """Query and key held the other way round: the same numbers as ``QUERY_KEY_SWAPPED``."""
    from parity.core.hypotheses import RoleSwap

    return (
        RoleSwap(
            "query",
            "key",
            same_as="its energy is key^T query",
            variant=QUERY_KEY_SWAPPED,
            held_in="convolution",
        ),
    )


# -- the pair ---------------------------------------------------------------------------------


def _port(channels: int):
    from impl_keras import PositionAttention

    return PositionAttention()


def _reference(channels: int):
    from reference_torch import PAM_Module

    return PAM_Module(channels)


def build():
    from impl_keras import PositionAttention
    from parity.core.layout import register_bindings
    from parity.core.spec import ModulePair

    register_bindings(PositionAttention)(bindings)
    return ModulePair(
        name="pam",
        make_reference=_reference,
        make_port=_port,
        min_channels=SIZE.min_channels,
        residual=True,
        variants=VARIANTS,
        roles=ROLES,
        role_swaps=role_swaps(),
    )


@cache
def chunked():
    """The memory-lean PAM is one more port: blocks of 7 query positions leave a remainder
    block whenever H*W is not a multiple of 7."""
    from dataclasses import replace

    return replace(PAIR.pair, name="pam-chunked", make_port=lambda channels: _lean_port(7))


def _lean_port(chunk_size: int):
    """The memory-lean PAM: attention in blocks of ``chunk_size`` query positions."""
    from impl_keras import PositionAttention

    return PositionAttention(chunk_size=chunk_size)


def soft_attention_parameters(module, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A PAM state_dict whose attention rows are soft at any size: query and key entries of
    standard deviation (C/8)**-0.25 / sqrt(C) give energies of about unit spread on a
    unit-variance input, where the softmax is tested rather than one-hot. ``gamma`` is
    non-zero, so that the attention path is what is compared."""
    state = {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}
    channels = state["value_conv.weight"].shape[1]
    spread = {"query_conv": (channels // 8) ** -0.25, "key_conv": (channels // 8) ** -0.25}
    for conv in ("query_conv", "key_conv", "value_conv"):
        weight = state[f"{conv}.weight"]
        state[f"{conv}.weight"] = (
            rng.standard_normal(weight.shape) * spread.get(conv, 1.0) / np.sqrt(channels)
        )
        state[f"{conv}.bias"] = rng.uniform(-0.5, 0.5, state[f"{conv}.bias"].shape)
    state["gamma"] = rng.uniform(0.5, 2.0, state["gamma"].shape)
    return {k: v.astype(np.float32) for k, v in state.items()}


def flops(shape) -> float:
    """Multiply-adds times two of the forward pass (softmax and elementwise work left out)."""
    b, c, h, w = shape
    n, reduced = h * w, c // 8
    return 2.0 * b * (n * c * (2 * reduced + c) + n * n * (reduced + c))


PAIR = PairDefinition(
    name="pam",
    summary="DANet's position attention",
    order=0,
    size=SIZE,
    build=build,
    more_ports=lambda: (chunked(),),
    bench=BenchSpec(
        shapes=((1, 512, 64, 64), (1, 512, 96, 96), (4, 512, 32, 32)),
        flops=flops,
        lean=LeanBench(make_port=_lean_port, randomize=soft_attention_parameters),
    ),
    checkpoint=CheckpointSpec(
        from_state=lambda read: {"channels": read("value_conv.weight", 0)},
        from_keras=lambda kernel: {"channels": kernel("value_conv")[2]},
        make_layer=_port,
    ),
)
