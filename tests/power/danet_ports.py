"""Whole-DANet ports with the bugs people report when a converted network "gives different
predictions", each on top of the bundled port at the test size of ``parity.pairs.danet``,
and a faithful refactor. Each class is its own factory (``Class(channels)``); its backbone
alone is ``Class.backbone_class``.

Each trap hides on some inputs, which the tests use to show that the rejection comes from
the trap and nothing else:

- Keras ``padding="same"`` on a stride-2 convolution pads one pixel at the bottom/right only
  when the input side is even (PyTorch pads one on each side); on odd sides it is exact.
- Keras ``MaxPooling2D(3, 2, padding="same")`` likewise, on the stem's output.
- Dilation on the first block of layer3 and layer4 (2 and 4, where the original uses 1
  and 2) is invisible while the feature map is 1x1 (input sides up to 8).
- Half-pixel bilinear resizing (``align_corners=False``) is invisible from a 1x1 map too.
- BatchNorm at Keras' default epsilon, 1e-3, everywhere in the backbone.

``MaxPoolPaddedWithInfinity`` is no float trap: exact in float, it is an int8 file's
(``tests/test_export.py``).
"""

from __future__ import annotations

import functools

import keras
from keras import ops

from impl_keras import DANet
from impl_keras.resnet import Bottleneck, DilatedResNet, TorchConv2D
from parity.core.layout import CONV_KERNEL, Binding, bindings_for
from parity.pairs.danet import TEST_BLOCKS, TEST_CLASSES, TEST_WIDTH
from tests.power.ports import RESHAPED_KERNEL


def _convs(backbone):
    """Every convolution of a built backbone."""
    yield from backbone.stem
    for stage in backbone.stages:
        for block in stage:
            yield from (block.conv1, block.conv2, block.conv3)
            if block.downsample:
                yield block.downsample_conv


def _norms(backbone):
    yield from (*backbone.stem_norm, backbone.bn1)
    for stage in backbone.stages:
        for block in stage:
            yield from (block.bn1, block.bn2, block.bn3)
            if block.downsample:
                yield block.downsample_norm


class _DANet(DANet):
    def __init__(self, channels=None, **kwargs):
        kwargs.setdefault("nclass", TEST_CLASSES)
        kwargs.setdefault("width", TEST_WIDTH)
        kwargs.setdefault("blocks", TEST_BLOCKS)
        super().__init__(**kwargs)


class _SamePaddingBackbone(DilatedResNet):
    def build(self, input_shape):
        super().build(input_shape)
        for conv in _convs(self):
            if conv.strides != (1, 1) and conv.torch_padding:
                conv.torch_padding, conv.padding = 0, "same"


class StrideTwoSamePadding(_DANet):
    """The stride-2 3x3 convolutions (the stem's first, layer2's first block) with Keras'
    ``padding="same"``, as ``Conv2D(w, 3, strides=2, padding="same")`` ports write them."""

    backbone_class = _SamePaddingBackbone


class _SameMaxPoolBackbone(DilatedResNet):
    def build(self, input_shape):
        super().build(input_shape)
        self.maxpool = keras.layers.MaxPooling2D(3, 2, padding="same", data_format=self.data_format)


class MaxPoolSamePadding(_DANet):
    """The stem's max pool as ``MaxPooling2D(3, 2, padding="same")``."""

    backbone_class = _SameMaxPoolBackbone


class _InfinitePaddedMaxPoolBackbone(DilatedResNet):
    def build(self, input_shape):
        super().build(input_shape)
        self.maxpool.pad_value = float("-inf")


class MaxPoolPaddedWithInfinity(_DANet):
    """The stem's max pool padded with -inf, as PyTorch pads ``MaxPool2d(padding=1)``:
    exact in float, and in an int8 file the pad's range is calibrated with its input's."""

    backbone_class = _InfinitePaddedMaxPoolBackbone


class _DilatedFirstBlockBackbone(DilatedResNet):
    def build(self, input_shape):
        super().build(input_shape)
        for stage, dilation in ((self.stages[2], 2), (self.stages[3], 4)):
            conv = stage[0].conv2
            conv.dilation_rate, conv.torch_padding = (dilation, dilation), dilation


class DilationOnFirstBlock(_DANet):
    """Every block of layer3 and layer4 dilated by 2 and 4, the first ones included (the
    original dilates those by 1 and 2)."""

    backbone_class = _DilatedFirstBlockBackbone


class HalfPixelUpsampling(_DANet):
    """The predictions resized with Keras' own bilinear resize (half-pixel centres, PyTorch's
    ``align_corners=False``)."""

    def call(self, inputs, training=None):
        shape = ops.shape(inputs)
        size = shape[1:3] if self.data_format == "channels_last" else shape[2:4]
        features = self.pretrained(inputs, training=training)
        return tuple(
            ops.image.resize(y, size, interpolation="bilinear", data_format=self.data_format)
            for y in self.head(features, training=training)
        )


class _KerasEpsilonBackbone(DilatedResNet):
    def build(self, input_shape):
        super().build(input_shape)
        for norm in _norms(self):
            norm.epsilon = 1e-3


class BatchNormKerasEpsilon(_DANet):
    """The backbone's BatchNorm at Keras' default epsilon, 1e-3 (PyTorch's is 1e-5)."""

    backbone_class = _KerasEpsilonBackbone


def _zero_padded_call(conv, padding, inputs):
    return keras.layers.Conv2D.call(conv, padding(inputs))


class _ZeroPaddingBackbone(DilatedResNet):
    def build(self, input_shape):
        super().build(input_shape)
        self.zero_paddings = []
        for conv in _convs(self):
            if not isinstance(conv, TorchConv2D) or not conv.torch_padding:
                continue
            padding = keras.layers.ZeroPadding2D(conv.torch_padding, data_format=self.data_format)
            conv.torch_padding = 0  # now "valid" on the explicitly padded input
            conv.call = functools.partial(_zero_padded_call, conv, padding)
            self.zero_paddings.append(padding)


class ExplicitZeroPadding(_DANet):
    """Faithful: every padded convolution as ``ZeroPadding2D(p)`` then a "valid" Conv2D."""

    backbone_class = _ZeroPaddingBackbone


def backbone_kernels_reshaped(port, reference):
    """A converter that reshapes the backbone's OIHW kernels to HWIO instead of transposing
    them (the head converted right): shapes fit, values scramble."""
    return [
        Binding(b.torch_key, b.variable, RESHAPED_KERNEL)
        if b.layout is CONV_KERNEL and b.torch_key.startswith("pretrained.")
        else b
        for b in bindings_for(port.layer)
    ]


def _fused(conv, norm, inputs):
    """``norm(conv(inputs))`` at inference as one convolution: the kernel scaled by
    gamma / sqrt(var + eps) per output channel, and a bias beta - mean * that scale."""
    scale = norm.gamma / ops.sqrt(norm.moving_variance + norm.epsilon)
    outputs = conv.convolution_op(inputs, conv.kernel * scale)  # HWIO: scale on O
    shift = norm.beta - norm.moving_mean * scale
    if conv.data_format == "channels_first":
        return outputs + ops.reshape(shift, (1, -1, 1, 1))
    return outputs + shift


class _FusedBottleneck(Bottleneck):
    def call(self, inputs, training=None):
        out = ops.relu(_fused(self.conv1, self.bn1, inputs))
        out = ops.relu(_fused(self.conv2, self.bn2, out))
        out = _fused(self.conv3, self.bn3, out)
        residual = inputs
        if self.downsample:
            residual = _fused(self.downsample_conv, self.downsample_norm, inputs)
        return ops.relu(out + residual)


class _FusedBackbone(DilatedResNet):
    block_class = _FusedBottleneck


class FusedConvBatchNorm(_DANet):
    """Faithful at inference: every bottleneck's convolution and BatchNorm fused into one
    convolution with a bias (the weights stay the original's, fused when called)."""

    backbone_class = _FusedBackbone
