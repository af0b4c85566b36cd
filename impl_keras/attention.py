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


class _Conv2D(keras.layers.Conv2D):
    """A Conv2D that runs channels_first on TensorFlow's CPU kernels too.

    TensorFlow's CPU Conv2D takes NHWC only, unless oneDNN is on (it is off by default on
    CPUs without AVX-512, e.g. AMD EPYC): a channels_first Keras Conv2D raises there. The
    convolution runs on the input transposed to NHWC and is transposed back, which is
    exact (data movement only).
    """

    def convolution_op(self, inputs, kernel):
        if self.data_format != "channels_first" or keras.backend.backend() != "tensorflow":
            return super().convolution_op(inputs, kernel)
        outputs = ops.conv(
            ops.transpose(inputs, (0, 2, 3, 1)),
            kernel,
            strides=list(self.strides),
            padding=self.padding,
            dilation_rate=self.dilation_rate,
            data_format="channels_last",
        )
        return ops.transpose(outputs, (0, 3, 1, 2))


class _PointwiseConv(_Conv2D):
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
        chunk_size: ``None`` (default) holds the whole (N, N) attention, N = H * W. An
            integer computes the same function ``chunk_size`` query positions at a time,
            forward and backward (the backward pass recomputes each block's attention and
            sums the key and value gradients as it goes), so that at most
            ``chunk_size * N`` attention weights live at once (for 256x256 maps the dense
            attention alone is 16 GiB per image in float32). It needs H and W known when
            the layer runs (eager, JAX, ``tf.function`` traced on concrete shapes); traced
            with unknown H and W it computes densely.
        **kwargs: base layer arguments (``name``, ``dtype``, ...).

    Call arguments:
        inputs: a 4D tensor ``(batch, H, W, C)`` (or ``(batch, C, H, W)``) with C >= 8;
            batch, H and W may change from call to call.

    Output:
        A tensor of the input's shape.
    """

    def __init__(self, data_format=None, chunk_size=None, **kwargs):
        super().__init__(data_format=data_format, **kwargs)
        if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
            raise ValueError(
                f"Expected chunk_size to be None or a positive integer. Received: "
                f"chunk_size={chunk_size!r}"
            )
        self.chunk_size = chunk_size

    def get_config(self):
        return {**super().get_config(), "chunk_size": self.chunk_size}

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
        axis = 1 if self.data_format == "channels_last" else 2  # of the positions
        positions = query.shape[axis]
        if not self.chunk_size or not isinstance(positions, int) or positions <= self.chunk_size:
            out = self._attend(query, key, value)
        else:
            out = self._attend_in_blocks(query, key, value)
        return self.gamma * ops.reshape(out, ops.shape(inputs)) + inputs

    def _attend(self, query, key, value):
        """Attention of some query positions over all positions: (batch, n, C') queries
        (channels-last) give (batch, n, C); (batch, C', n) give (batch, C, n)."""
        # einsum, not matmul: no transposes to write, and Keras 3.15's torch backend computes
        # a float64 matmul in float32 (its einsum keeps float64).
        if self.data_format == "channels_last":  # (batch, n, C'), (batch, N, C'), (batch, N, C)
            energy = ops.einsum("bnc,bmc->bnm", query, key)  # (batch, n, N)
            attention = ops.softmax(energy, axis=-1)
            return ops.einsum("bnm,bmc->bnc", attention, value)  # (batch, n, C)
        energy = ops.einsum("bcn,bcm->bnm", query, key)  # (batch, n, N)
        attention = ops.softmax(energy, axis=-1)
        return ops.einsum("bcm,bnm->bcn", value, attention)  # (batch, C, n)

    def _attend_in_blocks(self, query, key, value):
        """``_attend`` one block of ``chunk_size`` query positions at a time, with its own
        backward pass: per block, the attention is recomputed and the key and value
        gradients are added to running sums, so that no block outlives its turn. Measured
        at (1, 512, 128, 128), chunk 512, TensorFlow eager: 600 MB peak and 5.9 s forward
        and backward, against 850 MB and 8.1 s for ``keras.remat`` per block (which also
        recomputes attention times value)."""
        axis = 1 if self.data_format == "channels_last" else 2  # of the positions
        # Einsum subscripts: n query positions, m all positions, c reduced channels, d channels.
        q, k, v, o = ("bnc", "bmc", "bmd", "bnd") if axis == 1 else ("bcn", "bcm", "bdm", "bdn")
        positions = query.shape[axis]
        blocks = [
            slice(start, min(start + self.chunk_size, positions))  # the last: the remainder
            for start in range(0, positions, self.chunk_size)
        ]

        def rows(x, block):
            return x[:, block] if axis == 1 else x[:, :, block]

        @ops.custom_gradient
        def attend(query, key, value):
            # Not recorded by an outer tape: the gradient is the one below.
            query, key, value = (ops.stop_gradient(t) for t in (query, key, value))
            out = ops.concatenate(
                [self._attend(rows(query, block), key, value) for block in blocks], axis=axis
            )

            def grad(*args, upstream=None):
                upstream = args[0] if upstream is None else upstream
                d_query, d_key, d_value = [], 0.0, 0.0
                for block in blocks:
                    query_rows, d_out = rows(query, block), rows(upstream, block)
                    attention = ops.softmax(ops.einsum(f"{q},{k}->bnm", query_rows, key), axis=-1)
                    d_value = d_value + ops.einsum(f"bnm,{o}->{v}", attention, d_out)
                    d_attention = ops.einsum(f"{o},{v}->bnm", d_out, value)
                    d_energy = attention * (
                        d_attention - ops.sum(d_attention * attention, axis=-1, keepdims=True)
                    )
                    d_query.append(ops.einsum(f"bnm,{k}->{q}", d_energy, key))
                    d_key = d_key + ops.einsum(f"bnm,{q}->{k}", d_energy, query_rows)
                return ops.concatenate(d_query, axis=axis), d_key, d_value

            return out, grad

        return attend(query, key, value)


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
            energy = ops.einsum("bnc,bnd->bcd", features, features)  # (batch, C, C)
        else:  # (batch, C, N)
            energy = ops.einsum("bcn,bdn->bcd", features, features)
        energy = ops.max(energy, axis=-1, keepdims=True) - energy
        attention = ops.softmax(energy, axis=-1)  # (batch, C, C)
        if self.data_format == "channels_last":
            # features first: TensorFlow then multiplies without transposing the result.
            out = ops.einsum("bnd,bcd->bnc", features, attention)  # (batch, N, C)
        else:
            out = ops.einsum("bcd,bdn->bcn", attention, features)  # (batch, C, N)
        return self.gamma * ops.reshape(out, ops.shape(inputs)) + inputs
