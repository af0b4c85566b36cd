"""DANet's channel attention module (CAM): ``reference_torch.CAM_Module`` against
``impl_keras.ChannelAttention``.

Fu et al., "Dual Attention Network for Scene Segmentation", CVPR 2019: the (C, C) Gram
matrix of the channels, turned into ``softmax(rowmax - energy)``, mixes the channels;
``gamma`` scales the result added to x. Its only parameter is ``gamma``.
"""

from __future__ import annotations

from parity.backends.torch.variants import stepped
from parity.core.layout import SCALAR, Binding
from parity.core.registry import BenchSpec, CheckpointSpec, PairDefinition
from parity.core.sizes import ModuleSize
from parity.pairs.pam import ROLES

SIZE = ModuleSize(1, lambda b, c, h, w: b * c * c)  # (B, C, C) attention

NOMINAL_CHANNELS = 8
"""CAM holds only gamma: any channel count reads the same checkpoint."""


def bindings(layer) -> list[Binding]:
    """``ChannelAttention``'s one weight."""
    return [Binding("gamma", layer.gamma, SCALAR)]


# -- bug hypotheses: CAM with one step changed -------------------------------------------------


def _gram(features):
    return features.bmm(features.permute(0, 2, 1))


def _max_minus(energy, dim=-1):
    return (energy.amax(dim=-1, keepdim=True) - energy).softmax(dim=dim)


def _max_minus_first(energy):
    return _max_minus(energy, dim=1)


def _softmax_last(energy):
    return energy.softmax(dim=-1)


def _bmm(a, b):
    return a.bmm(b)


def _applied_transposed(attention, features):
    return attention.permute(0, 2, 1).bmm(features)


def _mixed_batch(features):
    import torch

    gram = torch.einsum("bcn,bdn->cd", features, features)
    return gram.expand(features.shape[0], *gram.shape)


def _family(steps: dict):
    """CAM with some of its steps (energy, attend, apply) replaced."""
    energy_of = steps.get("energy", _gram)
    attend = steps.get("attend", _max_minus)
    apply = steps.get("apply", _bmm)

    def forward(module, x):
        b, c = x.shape[:2]
        features = x.reshape(b, c, -1)  # (B, C, N)
        attention = attend(energy_of(features))
        return module.gamma * apply(attention, features).reshape(x.shape) + x

    return forward


VARIANTS = (
    stepped(
        "cam.softmax-over-rows",
        "softmax over the wrong axis",
        "the softmax normalises over axis 1 of the (B, C, C) energy instead of the last axis",
        _family,
        attend=_max_minus_first,
    ),
    stepped(
        "cam.attention-transposed",
        "attention applied transposed",
        "the attention matrix is applied transposed: out = attention^T @ x",
        _family,
        apply=_applied_transposed,
    ),
    stepped(
        "cam.max-minus-missing",
        "CAM without the max-minus step",
        "the max-minus step is missing: softmax(energy) instead of softmax(rowmax - energy), "
        "which is softmax(-energy)",
        _family,
        attend=_softmax_last,
    ),
    stepped(
        "cam.gram-across-batch",
        "attention mixed across the batch",
        "information leaks across the batch: one Gram matrix summed over all samples "
        "(right only when batch == 1)",
        _family,
        energy=_mixed_batch,
    ),
)


# -- the pair ---------------------------------------------------------------------------------


def _port(channels: int):
    from impl_keras import ChannelAttention

    return ChannelAttention()


def _reference(channels: int):
    from reference_torch import CAM_Module

    return CAM_Module(channels)


def build():
    from impl_keras import ChannelAttention
    from parity.core.layout import register_bindings
    from parity.core.spec import ModulePair

    register_bindings(ChannelAttention)(bindings)
    return ModulePair(
        name="cam",
        make_reference=_reference,
        make_port=_port,
        min_channels=SIZE.min_channels,
        residual=True,
        variants=VARIANTS,
        roles=ROLES,
    )


def flops(shape) -> float:
    """The Gram matrix and its product with the features, multiply-adds times two."""
    b, c, h, w = shape
    return 2.0 * b * 2 * (h * w) * c * c


PAIR = PairDefinition(
    name="cam",
    summary="DANet's channel attention",
    order=1,
    size=SIZE,
    build=build,
    bench=BenchSpec(shapes=((1, 512, 64, 64), (1, 512, 96, 96), (4, 512, 32, 32)), flops=flops),
    checkpoint=CheckpointSpec(
        from_state=lambda read: {"channels": NOMINAL_CHANNELS},
        from_keras=lambda kernel: {"channels": NOMINAL_CHANNELS},
        make_layer=_port,
    ),
)
