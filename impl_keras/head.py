"""Keras 3 port of DANet's head (Fu et al., CVPR 2019): both attention branches, three outputs.

Same structure as ``reference_torch.DANetHead``. BatchNorm keeps PyTorch's semantics:
epsilon 1e-5, momentum 0.9 in Keras terms (0.1 in PyTorch's), and running variance
updated with the unbiased batch variance as PyTorch does (Keras' own uses the biased one).
"""

from __future__ import annotations

import keras
from keras import ops

from impl_keras.attention import (
    ChannelAttention,
    PositionAttention,
    _Conv2D,
    _PointwiseConv,
    _standardize_data_format,
)

TORCH_BN_EPSILON = 1e-5
TORCH_BN_MOMENTUM = 0.1  # PyTorch's: new = (1 - m) * running + m * batch
KERAS_BN_MOMENTUM = 1.0 - TORCH_BN_MOMENTUM  # Keras': new = m * running + (1 - m) * batch


@keras.saving.register_keras_serializable(package="danet_parity")
class TorchBatchNormalization(keras.layers.BatchNormalization):
    """BatchNormalization that updates its moving variance as PyTorch does.

    Both normalise a training batch with its biased variance; PyTorch's running variance
    then takes the unbiased one (times n / (n - 1), n = values per channel), Keras' the
    biased one. After one step the two differ by a factor (n - 1) / n of the update.
    """

    def __init__(self, axis=-1, momentum=KERAS_BN_MOMENTUM, epsilon=TORCH_BN_EPSILON, **kwargs):
        super().__init__(axis=axis, momentum=momentum, epsilon=epsilon, **kwargs)

    def call(self, inputs, training=None, mask=None):
        if mask is not None or self.renorm:
            return super().call(inputs, training=training, mask=mask)
        # At least float32, as Keras computes. Not keras.backend.result_type: on Keras 3.15's
        # torch backend it resolves (float64, float32) to float32.
        dtype = keras.backend.standardize_dtype(inputs.dtype)
        dtype = "float32" if dtype in ("float16", "bfloat16") else dtype
        inputs = ops.cast(inputs, dtype)
        if training and self.trainable:
            mean, variance = ops.moments(inputs, axes=self._reduction_axes)
            shape = ops.shape(inputs)
            count = 1
            for axis in self._reduction_axes:
                count = count * shape[axis]
            count = ops.cast(count, dtype)
            unbiased = variance * count / (count - 1.0)
            momentum = self.momentum
            self.moving_mean.assign(
                ops.cast(self.moving_mean, dtype) * momentum + mean * (1.0 - momentum)
            )
            self.moving_variance.assign(
                ops.cast(self.moving_variance, dtype) * momentum + unbiased * (1.0 - momentum)
            )
        else:
            mean = ops.cast(self.moving_mean, dtype)
            variance = ops.cast(self.moving_variance, dtype)
        outputs = ops.batch_normalization(
            inputs,
            mean,
            variance,
            axis=self.axis,
            offset=ops.cast(self.beta, dtype) if self.center else None,
            scale=ops.cast(self.gamma, dtype) if self.scale else None,
            epsilon=self.epsilon,
        )
        return ops.cast(outputs, self.compute_dtype)


class ConvNormReLU(keras.layers.Layer):
    """3x3 convolution (no bias, padded by 1), BatchNorm, ReLU: PyTorch's
    ``Sequential(Conv2d(.., 3, padding=1, bias=False), BatchNorm2d, ReLU)``."""

    def __init__(self, filters, data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.data_format = _standardize_data_format(data_format)

    def build(self, input_shape):
        axis = -1 if self.data_format == "channels_last" else 1
        self.conv = _Conv2D(
            self.filters,
            3,
            padding="same",
            use_bias=False,
            data_format=self.data_format,
            dtype=self.dtype_policy,
            name="conv",
        )
        self.norm = self.make_norm(axis)
        self.conv.build(input_shape)
        self.norm.build(self.conv.compute_output_shape(input_shape))

    def make_norm(self, axis):
        return TorchBatchNormalization(axis=axis, dtype=self.dtype_policy, name="norm")

    def call(self, inputs, training=None):
        return ops.relu(self.norm(self.conv(inputs), training=training))

    def compute_output_shape(self, input_shape):
        return self.conv.compute_output_shape(input_shape)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "data_format": self.data_format}


class DropoutConv(keras.layers.Layer):
    """Channel dropout then a 1x1 convolution with bias: PyTorch's
    ``Sequential(Dropout2d(0.1), Conv2d(.., 1))``."""

    def __init__(self, filters, rate=0.1, data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.rate = rate
        self.data_format = _standardize_data_format(data_format)

    def build(self, input_shape):
        self.dropout = keras.layers.SpatialDropout2D(
            self.rate, data_format=self.data_format, dtype=self.dtype_policy, name="dropout"
        )
        # Not keras.layers.Conv2D: see _PointwiseConv (its bias, channels-first, W == filters).
        self.conv = _PointwiseConv(
            self.filters, 1, data_format=self.data_format, dtype=self.dtype_policy, name="conv"
        )
        self.conv.build(input_shape)

    def call(self, inputs, training=None):
        return self.conv(self.dropout(inputs, training=training))

    def compute_output_shape(self, input_shape):
        return self.conv.compute_output_shape(input_shape)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "rate": self.rate,
            "data_format": self.data_format,
        }


@keras.saving.register_keras_serializable(package="danet_parity")
class DANetHead(keras.layers.Layer):
    """DANet's head: position and channel attention branches, three predictions.

    Args:
        out_channels: classes (channels of each output).
        dropout_rate: of the channel dropout before each output convolution (0.1).
        data_format: ``"channels_last"`` (default) or ``"channels_first"``.

    Call arguments:
        inputs: ``(batch, H, W, C)`` (or ``(batch, C, H, W)``) with C >= 32.
        training: BatchNorm on batch statistics and dropout active when true.

    Output:
        The tuple ``(fused, position_branch, channel_branch)``, each
        ``(batch, H, W, out_channels)``.
    """

    conv_block = ConvNormReLU  # the conv-norm-ReLU block, replaceable by a subclass

    def __init__(self, out_channels, dropout_rate=0.1, data_format=None, **kwargs):
        super().__init__(**kwargs)
        if out_channels < 1:
            raise ValueError(
                f"DANetHead needs out_channels >= 1. Received: out_channels={out_channels}"
            )
        self.out_channels = out_channels
        self.dropout_rate = dropout_rate
        self.data_format = _standardize_data_format(data_format)
        self.channel_axis = -1 if self.data_format == "channels_last" else 1
        self.input_spec = keras.layers.InputSpec(ndim=4)

    def build(self, input_shape):
        if len(input_shape) != 4 or input_shape[self.channel_axis] is None:
            raise ValueError(
                "DANetHead expects a 4D input with a known channel dimension. Received: "
                f"input_shape={tuple(input_shape)}"
            )
        in_channels = input_shape[self.channel_axis]
        inter = in_channels // 4
        if inter < 8:
            raise ValueError(
                "DANetHead needs at least 32 input channels (its position attention works "
                f"on channels // 4 >= 8). Received: input_shape={tuple(input_shape)}"
            )
        fmt = dict(data_format=self.data_format, dtype=self.dtype_policy)
        inner = list(input_shape)
        inner[self.channel_axis] = inter
        inner = tuple(inner)
        block = self.conv_block
        self.conv5a = block(inter, name="conv5a", **fmt)
        self.conv5c = block(inter, name="conv5c", **fmt)
        self.sa = PositionAttention(name="sa", **fmt)
        self.sc = ChannelAttention(name="sc", **fmt)
        self.conv51 = block(inter, name="conv51", **fmt)
        self.conv52 = block(inter, name="conv52", **fmt)
        self.conv6 = DropoutConv(self.out_channels, self.dropout_rate, name="conv6", **fmt)
        self.conv7 = DropoutConv(self.out_channels, self.dropout_rate, name="conv7", **fmt)
        self.conv8 = DropoutConv(self.out_channels, self.dropout_rate, name="conv8", **fmt)
        for layer in (self.conv5a, self.conv5c):
            layer.build(input_shape)
        for layer in (
            self.sa,
            self.sc,
            self.conv51,
            self.conv52,
            self.conv6,
            self.conv7,
            self.conv8,
        ):
            layer.build(inner)
        self.input_spec = keras.layers.InputSpec(ndim=4, axes={self.channel_axis: in_channels})

    def call(self, inputs, training=None):
        sa_conv = self.conv51(self.sa(self.conv5a(inputs, training=training)), training=training)
        sc_conv = self.conv52(self.sc(self.conv5c(inputs, training=training)), training=training)
        sa_output = self.conv6(sa_conv, training=training)
        sc_output = self.conv7(sc_conv, training=training)
        sasc_output = self.conv8(sa_conv + sc_conv, training=training)
        return sasc_output, sa_output, sc_output

    def compute_output_shape(self, input_shape):
        shape = list(input_shape)
        shape[self.channel_axis] = self.out_channels
        return (tuple(shape),) * 3

    def get_config(self):
        return {
            **super().get_config(),
            "out_channels": self.out_channels,
            "dropout_rate": self.dropout_rate,
            "data_format": self.data_format,
        }
