"""The whole DANet as a module pair: a narrow, shallow dilated ResNet, the head, the upsampling.

Checked at ``TEST_WIDTH`` base channels instead of 64 (the head sees 32 * width = 64
channels instead of 2048) and ``TEST_BLOCKS`` bottlenecks per stage instead of ResNet-50's
(3, 4, 6, 3): the same structure (the deep stem, the max pool, each stage's first block with
its stride, shortcut and halved dilation, a following block at the full dilation of layer3
and layer4, the head, the resize) at a cost of seconds per example. The input has
PyTorch's 3 channels; the strategy draws batch, H and W (odd sides and sides of 1
included: how the strided convolutions and the max pool round is part of the check).
"""

from __future__ import annotations

from functools import cache, partial

from parity.core.layout import batch_norm_bindings, bindings_for, conv_bindings, prefixed
from parity.core.registry import (
    BenchSpec,
    BenchVariant,
    CheckpointSpec,
    PairDefinition,
    SizeVariant,
)
from parity.core.replay import Origin
from parity.core.sizes import ModuleSize

TEST_WIDTH = 2
TEST_BLOCKS = (1, 1, 2, 2)
TEST_CLASSES = 3
INPUT_CHANNELS = 3
MAX_SIDE = 41
MIN_SCALE = 0.1
"""Inputs below this scale vanish next to BatchNorm's offsets after the first block, and
with them whatever the backbone's early layers do wrong (images are normalised to ~1)."""
NORM_WEIGHT = (0.5, 1.5)
NORM_BIAS = 0.2


EXAMPLES = 10
"""Examples per property: one costs seconds (a ResNet, however narrow, and the head)."""

SIZE = ModuleSize(
    INPUT_CHANNELS,
    lambda b, c, h, w: b * (((h + 7) // 8 * ((w + 7) // 8)) ** 2 + (32 * TEST_WIDTH // 4) ** 2),
    max_channels=INPUT_CHANNELS,
)
"""The head's PAM and CAM on the backbone's output (~H/8 x ~W/8, 32 * width channels)."""


def signal_preserving_parameters(module, rng):
    """``parity.core.spec.random_parameters``, with the bias-free convolutions (every backbone
    convolution, the head's conv-norm blocks) drawn at He's scale (variance 2 / fan_in) and
    BatchNorm's weight in NORM_WEIGHT and bias in +-NORM_BIAS.

    At the generic draw (kernels at +-1/sqrt(fan_in), BatchNorm weight and bias in +-1) each
    conv-norm pair shrinks the input's contribution and adds an offset of about 1, so after
    a few blocks the outputs hardly depend on the input: measured on the narrow network, a
    max pool padded on the wrong side moved the outputs by 0.0002% (1.4x the float32 floor,
    a pass). The residual network's own initialisation keeps the signal alive.
    """
    import numpy as np

    from parity.core.spec import random_parameters

    state = random_parameters(module, rng)
    parameters = dict(module.named_parameters())
    for name, param in parameters.items():
        owner = name.rsplit(".", 1)[0]
        if param.dim() == 4 and f"{owner}.bias" not in parameters:
            bound = np.sqrt(6.0 / int(np.prod(param.shape[1:])))
            state[name] = rng.uniform(-bound, bound, size=tuple(param.shape))
        elif f"{owner}.running_var" in state and name.endswith(".weight"):
            state[name] = rng.uniform(*NORM_WEIGHT, size=tuple(param.shape))
        elif f"{owner}.running_var" in state and name.endswith(".bias"):
            state[name] = rng.uniform(-NORM_BIAS, NORM_BIAS, size=tuple(param.shape))
        state[name] = state[name].astype(np.float32)
    return state


def resnet_bindings(layer):
    """The backbone's weights under the original's keys (``conv1.0.weight``, ``bn1.*``,
    ``layer3.5.conv2.weight``, ``layer1.0.downsample.1.running_var``, ...)."""
    bindings = []
    if layer.deep_stem:  # Sequential(conv, norm, relu, conv, norm, relu, conv)
        for index, conv in zip((0, 3, 6), layer.stem, strict=True):
            bindings += conv_bindings(f"conv1.{index}", conv, bias=False)
        for index, norm in zip((1, 4), layer.stem_norm, strict=True):
            bindings += batch_norm_bindings(f"conv1.{index}", norm)
    else:
        bindings += conv_bindings("conv1", layer.stem[0], bias=False)
    bindings += batch_norm_bindings("bn1", layer.bn1)
    for stage_index, stage in enumerate(layer.stages):
        for block_index, block in enumerate(stage):
            prefix = f"layer{stage_index + 1}.{block_index}."
            parts = []
            for i in (1, 2, 3):
                parts += conv_bindings(f"conv{i}", getattr(block, f"conv{i}"), bias=False)
                parts += batch_norm_bindings(f"bn{i}", getattr(block, f"bn{i}"))
            if block.downsample:
                parts += conv_bindings("downsample.0", block.downsample_conv, bias=False)
                parts += batch_norm_bindings("downsample.1", block.downsample_norm)
            bindings += prefixed(prefix, parts)
    return bindings


def danet_bindings(layer):
    """``pretrained.*`` and ``head.*``, as the original's state_dict names them."""
    return prefixed("pretrained.", resnet_bindings(layer.pretrained)) + prefixed(
        "head.", bindings_for(layer.head)
    )


def make_reference(channels: int):
    from reference_torch import DANet

    _check_input_channels(channels)
    return DANet(TEST_CLASSES, "resnet50", width=TEST_WIDTH, blocks=TEST_BLOCKS)


def make_port(channels: int):
    from impl_keras import DANet

    _check_input_channels(channels)
    return DANet(TEST_CLASSES, "resnet50", width=TEST_WIDTH, blocks=TEST_BLOCKS)


def _images(max_side: int):
    """Examples of RGB images: batch 1 or 2, sides from 1 to ``max_side`` (odd ones too:
    how the strided layers round is checked), scales from MIN_SCALE."""
    from parity.core.strategies import examples

    return examples(
        min_channels=INPUT_CHANNELS,
        max_channels=INPUT_CHANNELS,
        max_batch=2,
        max_side=max_side,
        min_scale=MIN_SCALE,
    )


def _check_input_channels(channels: int) -> None:
    if channels != INPUT_CHANNELS:
        raise ValueError(
            f"DANet reads {INPUT_CHANNELS}-channel images. Received: channels={channels}"
        )


def build():
    from impl_keras import DANet as KerasDANet
    from impl_keras.resnet import DilatedResNet as KerasDilatedResNet
    from parity.core.layout import register_bindings
    from parity.core.registry import pair
    from parity.core.spec import ModulePair

    pair("head")  # the head's bindings, registered
    register_bindings(KerasDilatedResNet)(resnet_bindings)
    register_bindings(KerasDANet)(danet_bindings)
    return ModulePair(
        name="danet",
        make_reference=make_reference,
        make_port=make_port,
        min_channels=INPUT_CHANNELS,
        max_channels=INPUT_CHANNELS,
        randomize=signal_preserving_parameters,
        strategy=_images(MAX_SIDE),
        ignore=("*num_batches_tracked",),
    )


# -- whole checkpoints: the original's keys, any depth and width -------------------------------

STAGES = 4


def _original_blocks() -> dict[str, tuple[int, ...]]:
    """Bottlenecks per stage of ResNet-50 and -101, as the port builds them."""
    from impl_keras.resnet import BLOCKS

    return BLOCKS


def _sizes_from_state(read) -> dict:
    """The network a state_dict holds: its classes, stem, width and blocks per stage, read
    off the keys (``pretrained.layer3.22.conv1.weight``: 23 blocks in layer3, ResNet-101)."""
    from parity.core.errors import CheckpointError

    def has(key: str) -> bool:
        try:
            read(key, 0)
        except CheckpointError:
            return False
        return True

    deep_stem = has("pretrained.conv1.0.weight")
    width = read("pretrained.conv1.0.weight" if deep_stem else "pretrained.conv1.weight", 0)
    blocks = []
    for stage in range(1, STAGES + 1):
        count = 0
        while has(f"pretrained.layer{stage}.{count}.conv1.weight"):
            count += 1
        blocks.append(count)
    return {
        "channels": INPUT_CHANNELS,
        "classes": read("head.conv6.1.weight", 0),
        "width": width,
        "deep_stem": deep_stem,
        "blocks": tuple(blocks),
    }


def _sizes_from_keras(kernels) -> dict:
    """The same, read off a .weights.h5 file's kernels: the original depths only (the file
    names a stage's blocks by creation order, which does not split 16 blocks into stages)."""
    from parity.core.errors import CheckpointError

    by_total = {sum(b): (name, b) for name, b in _original_blocks().items()}
    kernels("stem")  # refused, in one line, when the file has no stem: not a DANet
    stems = kernels.all("stem")
    bottlenecks = len(kernels.all("conv2"))  # one 3x3 conv2 a bottleneck; nothing else has it
    if bottlenecks not in by_total:
        raise CheckpointError(
            f"{kernels.path} holds {bottlenecks} bottlenecks: not ResNet-50 (16) or -101 (33)"
        )
    return {
        "channels": INPUT_CHANNELS,
        "classes": kernels("conv6")[3],
        # The deep stem's convolutions give width, width, 2 * width channels; the 7x7, width.
        "width": min(shape[3] for shape in stems),
        "deep_stem": len(stems) == 3,
        "blocks": by_total[bottlenecks][1],
    }


def _layer(channels: int, classes: int, width: int, deep_stem: bool, blocks: tuple):
    from impl_keras import DANet

    backbone = next((n for n, b in _original_blocks().items() if b == tuple(blocks)), "resnet50")
    return DANet(classes, backbone, width=width, deep_stem=deep_stem, blocks=blocks)


def _describe(sizes: dict) -> str:
    backbone = next((n for n, b in _original_blocks().items() if b == tuple(sizes["blocks"])), None)
    if backbone and sizes["width"] == 64 and sizes["deep_stem"]:
        return f"impl_keras.DANet({sizes['classes']}, {backbone!r})"
    return (
        f"impl_keras.DANet({sizes['classes']}, width={sizes['width']}, "
        f"deep_stem={sizes['deep_stem']}, blocks={tuple(sizes['blocks'])})"
    )


# -- the benchmark: the original network at full width ---------------------------------------

BENCH_CLASSES = 19  # Cityscapes, as in DANet
BENCH_SHAPES = ((1, INPUT_CHANNELS, 512, 512), (1, INPUT_CHANNELS, 768, 768))
BACKBONES = ("resnet50", "resnet101")


def _full_reference(backbone: str, channels: int):
    from reference_torch import DANet

    _check_input_channels(channels)
    return DANet(BENCH_CLASSES, backbone)


def _full_port(backbone: str, channels: int):
    from impl_keras import DANet

    _check_input_channels(channels)
    return DANet(BENCH_CLASSES, backbone)


@cache
def counted_flops(backbone: str, shape: tuple[int, int, int, int]) -> float:
    """The full-width reference's forward FLOPs at ``shape``, counted by PyTorch's
    ``FlopCounterMode`` on the meta device (nothing allocated, nothing computed): every
    convolution and PAM's and CAM's batched products, two per multiply-add. BatchNorm,
    ReLU, the max pool, the softmaxes and the resize are left out, as in the other pairs'."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from reference_torch import DANet

    with torch.device("meta"):
        model = DANet(BENCH_CLASSES, backbone).eval()
        x = torch.empty(shape)
    with FlopCounterMode(display=False) as counter:
        model(x)
    return float(counter.get_total_flops())


BENCH = BenchSpec(
    shapes=BENCH_SHAPES,
    variants=tuple(
        BenchVariant(
            backbone,
            flops=partial(counted_flops, backbone),
            make_reference=partial(_full_reference, backbone),
            make_port=partial(_full_port, backbone),
        )
        for backbone in BACKBONES
    ),
)
"""The original network (width 64, ResNet-50 and -101, 19 classes) at Cityscapes-like crops."""


# -- the original network checked: `parity check danet --variant resnet50` -------------------

FULL_EXAMPLES = 2
"""Examples per full-width check: each costs tens of seconds on a CPU (the float64 and
float32 references' gradients w.r.t. 47 or 66 million parameters, and the port's)."""
FULL_MAX_SIDE = 25
"""Sides up to 25 (feature maps up to 4x4): the width and depth are what this adds; the
narrow network's properties draw the sides (to 41) and batches."""


def _full_pair(backbone: str):
    """The registered pair with the original network (width 64, 19 classes) in place of the
    narrow one: the same bindings, weights and policy."""
    from dataclasses import replace

    from parity.core.registry import pair

    return replace(
        pair("danet"),
        make_reference=partial(_full_reference, backbone),
        make_port=partial(_full_port, backbone),
        strategy=_images(FULL_MAX_SIDE),
        origin=Origin(variant=backbone),
    )


SIZES = tuple(
    SizeVariant(backbone, build=partial(_full_pair, backbone), examples=FULL_EXAMPLES)
    for backbone in BACKBONES
)


PAIR = PairDefinition(
    name="danet",
    summary="the whole DANet (dilated ResNet, head, resize), narrow",
    order=4,
    size=SIZE,
    build=build,
    examples=EXAMPLES,
    bench=BENCH,
    sizes=SIZES,
    checkpoint=CheckpointSpec(
        from_state=_sizes_from_state,
        from_keras=_sizes_from_keras,
        make_layer=_layer,
        describe=_describe,
    ),
)
