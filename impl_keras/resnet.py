"""Keras 3 port of DANet's backbone: the dilated ResNet of output stride 8.

Same structure as ``reference_torch.DilatedResNet`` (deep stem, bottlenecks strided on the
3x3 convolution, layer3 dilated by 2 and layer4 by 4 with each stage's first block dilated
by half as much). Every convolution and the max pool pad as PyTorch pads, symmetrically and
explicitly, then run "valid": Keras' ``padding="same"`` pads a stride-2 window on the
bottom and right only when the padding is odd, which shifts every window by one pixel, and
the output size rounds as PyTorch's ``floor((H + 2p - d(k - 1) - 1) / s) + 1`` does.
BatchNorm keeps PyTorch's epsilon (1e-5) and momentum (``TorchBatchNormalization``).
"""

from __future__ import annotations

import keras
from keras import ops

from impl_keras.attention import _Conv2D, _standardize_data_format
from impl_keras.head import TorchBatchNormalization

BLOCKS = {"resnet50": (3, 4, 6, 3), "resnet101": (3, 4, 23, 3)}
EXPANSION = 4
STAGE_DILATIONS = (1, 1, 2, 4)
STAGE_STRIDES = (1, 2, 1, 1)


def first_block_dilation(dilation: int) -> int:
    """The original dilates a stage's first block by half its dilation (1 for 1 and 2)."""
    return 1 if dilation in (1, 2) else dilation // 2


def _spatial_padding(data_format, padding):
    """``ops.pad``'s widths for ``padding`` pixels on each side of H and W."""
    sides = [padding, padding]
    if data_format == "channels_last":
        return [[0, 0], sides, sides, [0, 0]]
    return [[0, 0], [0, 0], sides, sides]


def _padded_shape(input_shape, data_format, padding):
    axes = (1, 2) if data_format == "channels_last" else (2, 3)
    shape = list(input_shape)
    for axis in axes:
        if shape[axis] is not None:
            shape[axis] += 2 * padding
    return tuple(shape)


@keras.saving.register_keras_serializable(package="danet_parity")
class TorchConv2D(_Conv2D):
    """A bias-free Conv2D padded as PyTorch's ``Conv2d(..., padding=p)``: ``p`` zeros on
    every side, then "valid".

    Args:
        filters, kernel_size, strides, dilation_rate, data_format: as ``keras.layers.Conv2D``.
        torch_padding: zeros added on each side of H and W (PyTorch's ``padding``).
    """

    def __init__(
        self,
        filters,
        kernel_size,
        strides=1,
        torch_padding=0,
        dilation_rate=1,
        data_format=None,
        **kwargs,
    ):
        kwargs.pop("padding", None)
        kwargs.pop("use_bias", None)
        super().__init__(
            filters,
            kernel_size,
            strides=strides,
            padding="valid",
            dilation_rate=dilation_rate,
            use_bias=False,
            data_format=_standardize_data_format(data_format),
            **kwargs,
        )
        self.torch_padding = torch_padding

    def convolution_op(self, inputs, kernel):
        if self.torch_padding:
            inputs = ops.pad(inputs, _spatial_padding(self.data_format, self.torch_padding))
        return super().convolution_op(inputs, kernel)

    def compute_output_shape(self, input_shape):
        padded = _padded_shape(input_shape, self.data_format, self.torch_padding)
        return super().compute_output_shape(padded)

    def get_config(self):
        return {**super().get_config(), "torch_padding": self.torch_padding}


@keras.saving.register_keras_serializable(package="danet_parity")
class TorchMaxPool2D(keras.layers.Layer):
    """PyTorch's ``MaxPool2d(3, stride=2, padding=1)``: padded with ``pad_value``, then a
    "valid" window. -inf (never picked) for any input; where the input is a ReLU's output,
    0 computes the same (every window holds an input value, and all of them are >= 0) and
    keeps the padding inside the values' range: an int8 converter calibrates the pad's
    range with its input's and an infinite pad leaves the tensor no step to hold them with.

    TensorFlow's CPU max pool takes NHWC only: channels_first inputs are pooled transposed
    (data movement only, exact).
    """

    def __init__(
        self,
        pool_size=3,
        strides=2,
        torch_padding=1,
        data_format=None,
        pad_value=float("-inf"),
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.pool_size = pool_size
        self.strides = strides
        self.torch_padding = torch_padding
        self.pad_value = pad_value
        self.data_format = _standardize_data_format(data_format)

    def call(self, inputs):
        x = inputs
        if self.data_format == "channels_first":
            x = ops.transpose(x, (0, 2, 3, 1))
        if self.torch_padding:
            x = ops.pad(
                x,
                _spatial_padding("channels_last", self.torch_padding),
                constant_values=self.pad_value,
            )
        x = ops.max_pool(x, self.pool_size, self.strides, "valid", "channels_last")
        if self.data_format == "channels_first":
            x = ops.transpose(x, (0, 3, 1, 2))
        return x

    def compute_output_shape(self, input_shape):
        shape = list(_padded_shape(input_shape, self.data_format, self.torch_padding))
        for axis in (1, 2) if self.data_format == "channels_last" else (2, 3):
            if shape[axis] is not None:
                shape[axis] = (shape[axis] - self.pool_size) // self.strides + 1
        return tuple(shape)

    def get_config(self):
        return {
            **super().get_config(),
            "pool_size": self.pool_size,
            "strides": self.strides,
            "torch_padding": self.torch_padding,
            "pad_value": self.pad_value,
            "data_format": self.data_format,
        }


def _channels_shape(channels, data_format):
    """An input shape that fixes only the channels (what building a layer needs)."""
    if data_format == "channels_last":
        return (None, None, None, channels)
    return (None, channels, None, None)


class Bottleneck(keras.layers.Layer):
    """1x1 reduce, 3x3 (strided, dilated), 1x1 expand by 4, each with BatchNorm; ReLU after
    the first two and after the residual sum; a strided 1x1 convolution with BatchNorm as
    the shortcut where the shape changes (``downsample_conv``, ``downsample_norm``).

    Args:
        planes: channels of the two inner convolutions; the block outputs ``4 * planes``.
        strides, dilation_rate: of the 3x3 convolution.
        downsample: whether the shortcut is a convolution (else the identity).
        data_format: ``"channels_last"`` (default) or ``"channels_first"``.
    """

    def __init__(
        self, planes, strides=1, dilation_rate=1, downsample=False, data_format=None, **kwargs
    ):
        super().__init__(**kwargs)
        self.planes = planes
        self.strides = strides
        self.dilation_rate = dilation_rate
        self.downsample = downsample
        self.data_format = _standardize_data_format(data_format)

    def build(self, input_shape):
        axis = -1 if self.data_format == "channels_last" else 1
        fmt = dict(data_format=self.data_format, dtype=self.dtype_policy)
        norm = dict(axis=axis, dtype=self.dtype_policy)
        planes, out = self.planes, self.planes * EXPANSION
        self.conv1 = TorchConv2D(planes, 1, name="conv1", **fmt)
        self.bn1 = TorchBatchNormalization(name="bn1", **norm)
        self.conv2 = TorchConv2D(
            planes,
            3,
            strides=self.strides,
            torch_padding=self.dilation_rate,
            dilation_rate=self.dilation_rate,
            name="conv2",
            **fmt,
        )
        self.bn2 = TorchBatchNormalization(name="bn2", **norm)
        self.conv3 = TorchConv2D(out, 1, name="conv3", **fmt)
        self.bn3 = TorchBatchNormalization(name="bn3", **norm)
        inner = _channels_shape(planes, self.data_format)
        self.conv1.build(input_shape)
        for layer in (self.bn1, self.conv2, self.bn2, self.conv3):
            layer.build(inner)
        self.bn3.build(_channels_shape(out, self.data_format))
        if self.downsample:
            self.downsample_conv = TorchConv2D(
                out, 1, strides=self.strides, name="downsample_conv", **fmt
            )
            self.downsample_norm = TorchBatchNormalization(name="downsample_norm", **norm)
            self.downsample_conv.build(input_shape)
            self.downsample_norm.build(_channels_shape(out, self.data_format))

    def call(self, inputs, training=None):
        out = ops.relu(self.bn1(self.conv1(inputs), training=training))
        out = ops.relu(self.bn2(self.conv2(out), training=training))
        out = self.bn3(self.conv3(out), training=training)
        residual = inputs
        if self.downsample:
            residual = self.downsample_norm(self.downsample_conv(inputs), training=training)
        return ops.relu(out + residual)

    def compute_output_shape(self, input_shape):
        shape = list(self.conv2.compute_output_shape(input_shape))
        shape[-1 if self.data_format == "channels_last" else 1] = self.planes * EXPANSION
        return tuple(shape)

    def get_config(self):
        return {
            **super().get_config(),
            "planes": self.planes,
            "strides": self.strides,
            "dilation_rate": self.dilation_rate,
            "downsample": self.downsample,
            "data_format": self.data_format,
        }


@keras.saving.register_keras_serializable(package="danet_parity")
class DilatedResNet(keras.layers.Layer):
    """DANet's backbone: stem, max pool, four stages; output stride 8.

    Args:
        blocks: bottlenecks per stage, e.g. ``BLOCKS["resnet50"]``.
        width: base channels (64 in the original); the output has ``32 * width``.
        deep_stem: three 3x3 convolutions (``stem[0..2]``, norms ``stem_norm[0..1]``) or one
            7x7 (``stem[0]``), then ``bn1``.
        data_format: ``"channels_last"`` (default) or ``"channels_first"``.

    Call arguments:
        inputs: ``(batch, H, W, 3)`` (or ``(batch, 3, H, W)``), any H, W >= 1.
        training: BatchNorm on batch statistics when true.

    Output:
        ``(batch, h, w, 32 * width)`` with h, w as PyTorch rounds them (about H/8, W/8).
    """

    block_class = Bottleneck  # the residual block, replaceable by a subclass

    def __init__(self, blocks, width=64, deep_stem=True, data_format=None, **kwargs):
        super().__init__(**kwargs)
        blocks = tuple(int(count) for count in blocks)
        if len(blocks) != 4 or min(blocks) < 1:
            raise ValueError(f"Expected 4 positive block counts. Received: blocks={blocks}")
        self.blocks = blocks
        self.width = width
        self.deep_stem = deep_stem
        self.data_format = _standardize_data_format(data_format)
        self.out_channels = width * 2 ** (len(blocks) - 1) * EXPANSION

    def build(self, input_shape):
        axis = -1 if self.data_format == "channels_last" else 1
        fmt = dict(data_format=self.data_format, dtype=self.dtype_policy)
        norm = dict(axis=axis, dtype=self.dtype_policy)
        width = self.width
        stem_channels = 2 * width if self.deep_stem else width
        if self.deep_stem:
            self.stem = [
                TorchConv2D(width, 3, strides=2, torch_padding=1, name="stem_0", **fmt),
                TorchConv2D(width, 3, torch_padding=1, name="stem_1", **fmt),
                TorchConv2D(stem_channels, 3, torch_padding=1, name="stem_2", **fmt),
            ]
            self.stem_norm = [
                TorchBatchNormalization(name=f"stem_norm_{i}", **norm) for i in range(2)
            ]
            self.stem[0].build(input_shape)
            for layer in (*self.stem[1:], *self.stem_norm):
                layer.build(_channels_shape(width, self.data_format))
        else:
            self.stem = [TorchConv2D(width, 7, strides=2, torch_padding=3, name="stem_0", **fmt)]
            self.stem_norm = []
            self.stem[0].build(input_shape)
        self.bn1 = TorchBatchNormalization(name="bn1", **norm)
        self.bn1.build(_channels_shape(stem_channels, self.data_format))
        # After the stem's ReLU: padded with 0 (TorchMaxPool2D says why).
        self.maxpool = TorchMaxPool2D(name="maxpool", pad_value=0.0, **fmt)
        in_channels = stem_channels
        self.stages = []
        for index, count in enumerate(self.blocks):
            planes = width * 2**index
            stride, dilation = STAGE_STRIDES[index], STAGE_DILATIONS[index]
            stage = []
            for position in range(count):
                reshapes = stride != 1 or in_channels != planes * EXPANSION
                block = self.block_class(
                    planes,
                    strides=stride if position == 0 else 1,
                    dilation_rate=first_block_dilation(dilation) if position == 0 else dilation,
                    downsample=position == 0 and reshapes,
                    name=f"layer{index + 1}_{position}",
                    **fmt,
                )
                block.build(_channels_shape(in_channels, self.data_format))
                stage.append(block)
                in_channels = planes * EXPANSION
            self.stages.append(stage)

    def call(self, inputs, training=None):
        x = self.stem[0](inputs)
        for conv, norm in zip(self.stem[1:], self.stem_norm, strict=True):
            x = conv(ops.relu(norm(x, training=training)))
        x = self.maxpool(ops.relu(self.bn1(x, training=training)))  # ~H/4
        for stage in self.stages:
            for block in stage:
                x = block(x, training=training)
        return x  # (batch, ~H/8, ~W/8, 32 * width)

    def compute_output_shape(self, input_shape):
        shape = self.stem[0].compute_output_shape(input_shape)
        shape = self.maxpool.compute_output_shape(shape)
        shape = self.stages[1][0].compute_output_shape(shape)
        shape = list(shape)
        shape[-1 if self.data_format == "channels_last" else 1] = self.out_channels
        return tuple(shape)

    def get_config(self):
        return {
            **super().get_config(),
            "blocks": self.blocks,
            "width": self.width,
            "deep_stem": self.deep_stem,
            "data_format": self.data_format,
        }
