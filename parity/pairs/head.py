"""DANet's head: ``reference_torch.DANetHead`` against ``impl_keras.DANetHead``.

Fu et al., "Dual Attention Network for Scene Segmentation", CVPR 2019: two branches of
conv-BatchNorm-ReLU blocks around PAM and CAM on C/4 channels, summed, and three 1x1
classifiers (fused, position branch, channel branch). Checked in evaluation mode here; in
training mode by ``parity.run.training``.
"""

from __future__ import annotations

from parity.backends.torch.variants import Variant
from parity.core.layout import Binding, batch_norm_bindings, conv_bindings, prefixed
from parity.core.registry import BenchSpec, CheckpointSpec, PairDefinition
from parity.core.sizes import ModuleSize
from parity.pairs import cam, pam

SIZE = ModuleSize(32, lambda b, c, h, w: b * ((h * w) ** 2 + (c // 4) ** 2))
"""PAM and CAM on C // 4 channels, and PAM needs 8 of them."""

MAX_CHANNELS = 64
BENCH_CLASSES = 19  # Cityscapes, as in DANet
BLOCKS = ("conv5a", "conv5c", "conv51", "conv52")


def out_channels(in_channels: int) -> int:
    """The head's classes, 2 to 8, varying with the drawn input channels so that the
    examples cover class counts too without another field."""
    return 2 + in_channels % 7


def bindings(layer) -> list[Binding]:
    """The Keras head's weights and BatchNorm statistics as the reference's keys."""
    found = []
    for name in BLOCKS[:2]:
        block = getattr(layer, name)
        found += conv_bindings(f"{name}.0", block.conv, bias=False)
        found += batch_norm_bindings(f"{name}.1", block.norm)
    found += prefixed("sa.", pam.bindings(layer.sa)) + prefixed("sc.", cam.bindings(layer.sc))
    for name in BLOCKS[2:]:
        block = getattr(layer, name)
        found += conv_bindings(f"{name}.0", block.conv, bias=False)
        found += batch_norm_bindings(f"{name}.1", block.norm)
    for name in ("conv6", "conv7", "conv8"):
        found += conv_bindings(f"{name}.1", getattr(layer, name).conv)
    return found


# -- bug hypotheses: the head (evaluation mode) with one block changed -----------------------


def _forward(*, eps=None, relu_missing="", relu_before=""):
    """The head's forward (evaluation mode) with one of its blocks changed."""

    def block(module, name, x):
        from torch.nn import functional as F  # noqa: N812

        conv, norm = getattr(module, name)[0], getattr(module, name)[1]
        y = conv(x)
        if relu_before == name:
            y = y.relu()
        y = F.batch_norm(
            y,
            norm.running_mean,
            norm.running_var,
            norm.weight,
            norm.bias,
            training=False,
            eps=norm.eps if eps is None else eps,
        )
        return y if relu_missing == name or relu_before == name else y.relu()

    def forward(module, x):
        sa_conv = block(module, "conv51", module.sa(block(module, "conv5a", x)))
        sc_conv = block(module, "conv52", module.sc(block(module, "conv5c", x)))
        return module.conv8(sa_conv + sc_conv), module.conv6(sa_conv), module.conv7(sc_conv)

    return forward


VARIANTS = (
    Variant(
        "head.batch-norm-epsilon-1e-3",
        "BatchNorm epsilon at Keras' default",
        "BatchNorm uses Keras' default epsilon 1e-3 where PyTorch's is 1e-5",
        _forward(eps=1e-3),
    ),
    *(
        Variant(
            f"head.relu-missing.{name}",
            f"ReLU missing after {name}'s norm",
            f"the ReLU after {name}'s BatchNorm is missing",
            _forward(relu_missing=name),
        )
        for name in BLOCKS
    ),
    *(
        Variant(
            f"head.relu-before-norm.{name}",
            f"ReLU before {name}'s norm",
            f"{name} applies its ReLU before the BatchNorm instead of after it",
            _forward(relu_before=name),
        )
        for name in BLOCKS
    ),
)


# -- the pair ---------------------------------------------------------------------------------


def _reference(channels: int, classes: int | None = None):
    from reference_torch import DANetHead

    return DANetHead(channels, classes or out_channels(channels))


def _port(channels: int, classes: int | None = None):
    from impl_keras import DANetHead

    return DANetHead(classes or out_channels(channels))


def build():
    from impl_keras import DANetHead
    from parity.core.layout import register_bindings
    from parity.core.spec import ModulePair
    from parity.core.strategies import examples

    pam.PAIR.pair, cam.PAIR.pair  # noqa: B018 -- the attention layers' bindings, registered
    register_bindings(DANetHead)(bindings)
    return ModulePair(
        name="head",
        make_reference=_reference,
        make_port=_port,
        min_channels=SIZE.min_channels,
        max_channels=MAX_CHANNELS,
        strategy=examples(min_channels=SIZE.min_channels, max_channels=MAX_CHANNELS, max_side=16),
        ignore=("*num_batches_tracked",),
        variants=VARIANTS,
        roles=pam.ROLES,
        role_swaps=pam.role_swaps(),
    )


def flops(shape) -> float:
    """The convolutions, the three classifiers (19 classes) and PAM and CAM on C // 4."""
    b, c, h, w = shape
    n, inter = h * w, c // 4
    convs = 2.0 * b * n * 9 * (2 * c * inter + 2 * inter * inter)
    outputs = 2.0 * b * n * inter * BENCH_CLASSES * 3
    return convs + outputs + pam.flops((b, inter, h, w)) + cam.flops((b, inter, h, w))


PAIR = PairDefinition(
    name="head",
    summary="DANet's head (both branches, BatchNorm, three outputs)",
    order=2,
    size=SIZE,
    build=build,
    bench=BenchSpec(
        shapes=((1, 2048, 64, 64), (1, 2048, 96, 96), (4, 2048, 32, 32)),
        flops=flops,
        make_reference=lambda channels: _reference(channels, BENCH_CLASSES),
        make_port=lambda channels: _port(channels, BENCH_CLASSES),
    ),
    checkpoint=CheckpointSpec(
        from_state=lambda read: {
            "channels": read("conv5a.0.weight", 1),
            "classes": read("conv6.1.weight", 0),
        },
        from_keras=lambda kernel: {
            "channels": kernel("conv5a")[2],
            "classes": kernel("conv6")[3],
        },
        make_layer=_port,
        describe=lambda sizes: f"impl_keras.DANetHead({sizes['classes']})",
        default=True,
    ),
)
