"""Keras 3 port of DANet's position and channel attention modules.

Same function as ``reference_torch`` (Fu et al., CVPR 2019), written with ``keras.ops`` only
so that it runs on every Keras backend. Channels-last inputs are flattened straight to
``(batch, N, C)``, N = H * W in row-major order, so no layout transpose is ever needed.
"""

from __future__ import annotations

import keras
from keras import ops

PAM_REDUCTION = 8
_DATA_FORMATS = ("channels_last", "channels_first")


def _standardize_data_format(data_format):
    if data_format is None:
        return keras.config.image_data_format()
    if data_format not in _DATA_FORMATS:
        raise ValueError(
            f"Expected one of {set(_DATA_FORMATS)}. Received: data_format={data_format!r}"
        )
    return data_format


class _PointwiseConv(keras.layers.Conv2D):
    """A 1x1 Conv2D whose bias lands on the channel axis in both data formats.

    Keras 3.15's TensorFlow ``ops.add`` rewrites ``x + bias`` as ``tf.nn.bias_add`` and
    picks NHWC whenever x's last axis has the bias's length, even for a (1, C, 1, 1) bias:
    a channels_first Conv2D whose width equals its filter count adds its bias along W.
    This suite found it (PAM, channels_first, input (1, 16, 1, 2)); adding the reshaped
    bias with the backend's own ``+`` broadcasts as written.
    """

    def call(self, inputs):
        outputs = self.convolution_op(inputs, self.kernel)
        if self.data_format == "channels_first":
            return outputs + ops.reshape(self.bias, (1, self.filters, 1, 1))
        return ops.add(outputs, self.bias)


class _SpatialAttention(keras.layers.Layer):
    """What PositionAttention and ChannelAttention share: data format, input checks, gamma."""

    def __init__(self, data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.data_format = _standardize_data_format(data_format)
        self.channel_axis = -1 if self.data_format == "channels_last" else 1
        self.input_spec = keras.layers.InputSpec(ndim=4)

    def _channels_from(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(
                f"{type(self).__name__} expects a 4D input "
                f"{self._layout_text()}. Received: input_shape={tuple(input_shape)}"
            )
        channels = input_shape[self.channel_axis]
        if channels is None:
            raise ValueError(
                f"{type(self).__name__} needs a known channel dimension "
                f"{self._layout_text()}. Received: input_shape={tuple(input_shape)}"
            )
        return channels

    def _layout_text(self):
        if self.data_format == "channels_last":
            return "(batch, H, W, C) for data_format='channels_last'"
        return "(batch, C, H, W) for data_format='channels_first'"

    def _build_gamma_and_spec(self, channels):
        # Zero, as in the reference: the block starts as the identity.
        self.gamma = self.add_weight(name="gamma", shape=(), initializer="zeros")
        self.input_spec = keras.layers.InputSpec(ndim=4, axes={self.channel_axis: channels})

    def _flatten(self, x):
        """(batch, H, W, C) -> (batch, N, C); (batch, C, H, W) -> (batch, C, N)."""
        shape = ops.shape(x)
        if self.data_format == "channels_last":
            return ops.reshape(x, (shape[0], shape[1] * shape[2], shape[3]))
        return ops.reshape(x, (shape[0], shape[1], shape[2] * shape[3]))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "data_format": self.data_format}


@keras.saving.register_keras_serializable(package="danet_parity")
class PositionAttention(_SpatialAttention):
    """DANet's position attention module (PAM).

    Each position is replaced by a softmax-weighted sum of the values at all positions,
    scaled by a learned ``gamma`` (initially 0) and added to the input.

    Args:
        data_format: ``"channels_last"`` (default, from ``keras.config``) or
            ``"channels_first"``.
        **kwargs: base layer arguments (``name``, ``dtype``, ...).

    Call arguments:
        inputs: a 4D tensor ``(batch, H, W, C)`` (or ``(batch, C, H, W)``) with C >= 8;
            batch, H and W may change from call to call.

    Output:
        A tensor of the input's shape.
    """

    def build(self, input_shape):
        channels = self._channels_from(input_shape)
        if channels < PAM_REDUCTION:
            raise ValueError(
                f"PositionAttention needs at least {PAM_REDUCTION} input channels (query and "
                f"key have channels // {PAM_REDUCTION}). Received: input_shape="
                f"{tuple(input_shape)} with {channels} channels"
            )
        conv = dict(kernel_size=1, data_format=self.data_format, dtype=self.dtype_policy)
        self.query_conv = _PointwiseConv(channels // PAM_REDUCTION, name="query_conv", **conv)
        self.key_conv = _PointwiseConv(channels // PAM_REDUCTION, name="key_conv", **conv)
        self.value_conv = _PointwiseConv(channels, name="value_conv", **conv)
        for sublayer in (self.query_conv, self.key_conv, self.value_conv):
            sublayer.build(input_shape)
        self._build_gamma_and_spec(channels)

    def call(self, inputs):
        query = self._flatten(self.query_conv(inputs))
        key = self._flatten(self.key_conv(inputs))
        value = self._flatten(self.value_conv(inputs))
        if self.data_format == "channels_last":  # (batch, N, C') and (batch, N, C)
            energy = ops.matmul(query, ops.transpose(key, (0, 2, 1)))  # (batch, N, N)
            attention = ops.softmax(energy, axis=-1)
            out = ops.matmul(attention, value)  # (batch, N, C)
        else:  # (batch, C', N) and (batch, C, N)
            energy = ops.matmul(ops.transpose(query, (0, 2, 1)), key)  # (batch, N, N)
            attention = ops.softmax(energy, axis=-1)
            out = ops.matmul(value, ops.transpose(attention, (0, 2, 1)))  # (batch, C, N)
        return self.gamma * ops.reshape(out, ops.shape(inputs)) + inputs


@keras.saving.register_keras_serializable(package="danet_parity")
class ChannelAttention(_SpatialAttention):
    """DANet's channel attention module (CAM).

    Each channel is replaced by a softmax-weighted sum of all channels, the weights being
    ``softmax(rowmax(E) - E)`` for the Gram matrix E of the channels (the original's
    choice, equal to ``softmax(-E)``), scaled by ``gamma`` (initially 0) and added to the
    input.

    Args:
        data_format: ``"channels_last"`` (default, from ``keras.config``) or
            ``"channels_first"``.
        **kwargs: base layer arguments (``name``, ``dtype``, ...).

    Call arguments:
        inputs: a 4D tensor ``(batch, H, W, C)`` (or ``(batch, C, H, W)``).

    Output:
        A tensor of the input's shape.
    """

    def build(self, input_shape):
        self._build_gamma_and_spec(self._channels_from(input_shape))

    def call(self, inputs):
        features = self._flatten(inputs)
        if self.data_format == "channels_last":  # (batch, N, C)
            energy = ops.matmul(ops.transpose(features, (0, 2, 1)), features)  # (batch, C, C)
        else:  # (batch, C, N)
            energy = ops.matmul(features, ops.transpose(features, (0, 2, 1)))
        energy = ops.max(energy, axis=-1, keepdims=True) - energy
        attention = ops.softmax(energy, axis=-1)  # (batch, C, C)
        if self.data_format == "channels_last":
            out = ops.matmul(features, ops.transpose(attention, (0, 2, 1)))  # (batch, N, C)
        else:
            out = ops.matmul(attention, features)  # (batch, C, N)
        return self.gamma * ops.reshape(out, ops.shape(inputs)) + inputs
