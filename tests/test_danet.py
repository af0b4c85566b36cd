"""The whole DANet: the reference's structure against the original's, the align_corners
resize, and parity of the narrow network (outputs and every gradient) in both data formats.

The original (github.com/junfu1115/DANet, ``encoding/models/sseg/danet.py``, ``base.py``,
``backbone/resnet.py``) is not installable here, so its keys are recorded below from its
code: ``DANet(nclass, backbone)`` builds ``ResNet(Bottleneck, blocks, dilated=True)`` with its
default deep stem and sets ``pretrained.fc = None`` (no ``fc`` keys; the global pool has no
state), then ``DANetHead(2048, nclass)``.
"""

import keras
import numpy as np
import pytest
import torch
from torch.nn import functional

from impl_keras import DANet as KerasDANet
from impl_keras import resize_bilinear_align_corners
from parity.backends.weights import export_state_dict, load_state_dict
from parity.core import registry
from parity.core.layout import nhwc_to_nchw
from parity.core.spec import channels_first, random_parameters
from parity.core.strategies import Example
from parity.frontends.pytest.properties import run_property
from parity.run.assertions import assert_parity
from parity.run.driver import Evaluation
from reference_torch import DANet
from tests.test_head import ORIGINAL_KEYS as HEAD_KEYS

DANET = registry.pair("danet")

NORM = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
BLOCK_KEYS = [
    f"{part}.{name}"
    for i in (1, 2, 3)
    for part, names in ((f"conv{i}", ("weight",)), (f"bn{i}", NORM))
    for name in names
]
DOWNSAMPLE_KEYS = ["downsample.0.weight"] + [f"downsample.1.{name}" for name in NORM]
STEM_KEYS = (
    ["conv1.0.weight"]
    + [f"conv1.1.{name}" for name in NORM]
    + ["conv1.3.weight"]
    + [f"conv1.4.{name}" for name in NORM]
    + ["conv1.6.weight"]
    + [f"bn1.{name}" for name in NORM]
)


def original_keys(blocks):
    """The original DANet's state_dict keys, in its order, for bottlenecks per stage."""
    keys = [f"pretrained.{key}" for key in STEM_KEYS]
    for stage, count in enumerate(blocks, start=1):
        for block in range(count):
            parts = BLOCK_KEYS + (DOWNSAMPLE_KEYS if block == 0 else [])
            keys += [f"pretrained.layer{stage}.{block}.{part}" for part in parts]
    return keys + [f"head.{key}" for key in HEAD_KEYS]


SHAPES = {  # a sample, nclass = 19 (Cityscapes)
    "pretrained.conv1.0.weight": (64, 3, 3, 3),
    "pretrained.conv1.3.weight": (64, 64, 3, 3),
    "pretrained.conv1.6.weight": (128, 64, 3, 3),
    "pretrained.bn1.running_var": (128,),
    "pretrained.layer1.0.conv1.weight": (64, 128, 1, 1),
    "pretrained.layer1.0.downsample.0.weight": (256, 128, 1, 1),
    "pretrained.layer2.0.conv2.weight": (128, 128, 3, 3),
    "pretrained.layer2.0.downsample.0.weight": (512, 256, 1, 1),
    "pretrained.layer3.0.conv1.weight": (256, 512, 1, 1),
    "pretrained.layer3.1.conv3.weight": (1024, 256, 1, 1),
    "pretrained.layer4.0.downsample.0.weight": (2048, 1024, 1, 1),
    "pretrained.layer4.2.bn3.weight": (2048,),
    "head.conv5a.0.weight": (512, 2048, 3, 3),
    "head.sa.query_conv.weight": (64, 512, 1, 1),
    "head.conv8.1.weight": (19, 512, 1, 1),
}


@pytest.mark.parametrize(
    ("backbone", "blocks", "count", "parameters"),
    [("resnet50", (3, 4, 6, 3), 368, 47_644_027), ("resnet101", (3, 4, 23, 3), 674, 66_688_379)],
)
def test_reference_has_the_original_keys_and_shapes(backbone, blocks, count, parameters):
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        state = DANet(19, backbone).state_dict()
    assert list(state) == original_keys(blocks) and len(state) == count
    assert sum(v.numel() for k, v in state.items() if not k.endswith("tracked")) == parameters
    for key, shape in SHAPES.items():
        assert tuple(state[key].shape) == shape, key
    if backbone == "resnet101":
        assert tuple(state["pretrained.layer3.22.conv3.weight"].shape) == (1024, 256, 1, 1)


def test_reference_dilates_as_the_original():
    """Output stride 8: layer2 strided; layer3 and layer4 dilated by 2 and 4, their first
    blocks by 1 and 2; every 3x3 padded by its dilation."""
    with torch.device("meta"):
        backbone = DANet(19, "resnet50").pretrained
    conv2 = {
        (stage, block): getattr(backbone, f"layer{stage}")[block].conv2
        for stage, block in ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 5), (4, 0), (4, 2))
    }
    expected = {  # (stride, dilation)
        (1, 0): (1, 1),
        (2, 0): (2, 1),
        (2, 1): (1, 1),
        (3, 0): (1, 1),
        (3, 1): (1, 2),
        (3, 5): (1, 2),
        (4, 0): (1, 2),
        (4, 2): (1, 4),
    }
    for where, (stride, dilation) in expected.items():
        conv = conv2[where]
        assert (conv.stride[0], conv.dilation[0], conv.padding[0]) == (stride, dilation, dilation)
    assert backbone.layer3[0].downsample[0].stride == (1, 1)
    assert backbone.layer2[0].downsample[0].stride == (2, 2)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize(
    ("source", "target"), [((5, 6), (33, 41)), ((1, 5), (1, 5)), ((3, 1), (7, 2)), ((7, 9), (3, 2))]
)
def test_resize_matches_align_corners_true(source, target, data_format):
    """Within 2 ulps (of the largest value) of PyTorch in float64, not bit for bit: its
    kernel fuses a multiply-add that keras.ops has no operation for. Keras' own half-pixel
    resize is far off."""
    x = np.random.default_rng(0).standard_normal((2, 3, *source))
    expected = functional.interpolate(
        torch.from_numpy(x), target, mode="bilinear", align_corners=True
    ).numpy()
    inputs = x if data_format == "channels_first" else x.transpose(0, 2, 3, 1)
    got = keras.ops.convert_to_numpy(
        resize_bilinear_align_corners(keras.ops.convert_to_tensor(inputs), target, data_format)
    )
    got = got if data_format == "channels_first" else nhwc_to_nchw(got)
    assert got.dtype == np.float64
    ulp = np.spacing(np.max(np.abs(x)))
    np.testing.assert_allclose(got, expected, rtol=0, atol=2 * ulp)
    if source == (5, 6):
        half_pixel = keras.ops.image.resize(x.transpose(0, 2, 3, 1), target)
        assert np.max(np.abs(nhwc_to_nchw(keras.ops.convert_to_numpy(half_pixel)) - expected)) > 0.1


def test_seven_by_seven_stem_converts_and_computes_as_the_reference():
    """The original's earlier stem (``deep_stem=False``: one 7x7, ``pretrained.conv1.weight``):
    every key converts both ways, and the float64 port computes the reference's outputs."""
    reference = DANet(2, width=1, deep_stem=False, blocks=(1, 1, 2, 1)).double().eval()
    state = random_parameters(reference, np.random.default_rng(0))
    reference.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    port = KerasDANet(2, width=1, deep_stem=False, blocks=(1, 1, 2, 1), dtype="float64")
    x = np.random.default_rng(1).standard_normal((2, 3, 11, 6))
    port(x.transpose(0, 2, 3, 1))
    load_state_dict(port, state, ignore=["*num_batches_tracked"])
    exported = export_state_dict(port)
    assert "pretrained.conv1.weight" in exported
    assert sorted(exported) == sorted(k for k in state if not k.endswith("tracked"))
    for key, value in exported.items():
        np.testing.assert_array_equal(value, state[key], err_msg=key)
    expected = [y.detach().numpy() for y in reference(torch.from_numpy(x))]
    got = [nhwc_to_nchw(keras.ops.convert_to_numpy(y)) for y in port(x.transpose(0, 2, 3, 1))]
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    ("pair", "example"),
    [
        (DANET, Example(2, 3, 9, 13, 1.0, 3)),  # H, W odd, off multiples of 8
        (DANET, Example(2, 3, 1, 6, 0.5, 1)),  # a side of 1; an even side for the max pool
        (channels_first(DANET), Example(2, 3, 10, 7, 2.0, 2)),
    ],
    ids=["9x13", "1x6", "channels_first-10x7"],
)
def test_whole_model_parity(pair, example):
    """The narrow network's three outputs and the gradients w.r.t. the input and every
    parameter (101 tensors) within the tolerance policy, against float64 truth."""
    report = assert_parity(pair, example)
    parameters = len(list(DANET.make_reference(3).parameters()))
    assert len(report.comparisons) == 3 + 1 + parameters


def test_whole_model_outputs_at_a_larger_size():
    """Outputs only at 33x41 (feature maps 5x6; gradients there cost ~10x more when the
    policy's rounding floor is needed)."""
    report = assert_parity(DANET, Example(2, 3, 33, 41, 1.0, 0), gradients=False)
    assert [c.name for c in report.comparisons] == ["output[0]", "output[1]", "output[2]"]


def test_whole_model_outputs_match_reference():
    """The registered pair's property, at its own example count (an example costs seconds):
    random batch, sides (1 and odd included) and scales; outputs (the fixed examples above
    check every gradient)."""
    examples = registry.definition("danet").examples
    run_property(DANET, Evaluation(gradients=False), examples=examples)


@pytest.mark.parametrize("backbone", ["resnet50", "resnet101"])
def test_full_width_outputs(backbone):
    """The original's widths and depths (2048 channels into the head), as ``parity check
    danet --variant`` checks them, outputs only, on one small input: the narrow network
    above stands for them everywhere else."""
    full = registry.variant_pair("danet", backbone)
    report = assert_parity(full, Example(1, 3, 17, 11, 1.0, 0), gradients=False)
    assert [c.name for c in report.comparisons] == ["output[0]", "output[1]", "output[2]"]
    assert full.origin.flags() == f"--variant {backbone}"  # what a failure's replay line adds
