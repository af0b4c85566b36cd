"""Ports planted for the suite to judge: buggy ones it must reject, faithful ones it must pass.

Each buggy port is one bug seen in published DANet ports, on top of the bundled layer (so
its weights convert as the bundled layer's do); each faithful one computes the same
function another way. All are channels-last.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
from keras import ops

from impl_keras import ChannelAttention, PositionAttention
from parity.core.layout import CONV_KERNEL, Binding, Layout, bindings_for


def _positions(x):
    """(batch, H, W, C) -> (batch, N, C): the right flattening."""
    b, h, w, c = ops.shape(x)
    return ops.reshape(x, (b, h * w, c))


def _transpose(x):
    return ops.transpose(x, (0, 2, 1))


class _PAM(PositionAttention):
    """The bundled PAM split into steps, so that a port can change one of them. The class
    is its own factory: ``--port tests.power.ports:PAMNoResidual``."""

    def __init__(self, channels=None, **kwargs):
        super().__init__(**kwargs)

    def qkv(self, x):
        return tuple(
            _positions(conv(x)) for conv in (self.query_conv, self.key_conv, self.value_conv)
        )

    def energy(self, query, key):
        return ops.matmul(query, _transpose(key))  # (batch, N, N)

    def attend(self, energy):
        return ops.softmax(energy, axis=-1)

    def mix(self, attention, value):
        return ops.matmul(attention, value)  # (batch, N, C)

    def combine(self, out, x):
        return self.gamma * ops.reshape(out, ops.shape(x)) + x

    def call(self, x):
        query, key, value = self.qkv(x)
        return self.combine(self.mix(self.attend(self.energy(query, key)), value), x)


class _CAM(ChannelAttention):
    """The bundled CAM split into steps (its own factory too)."""

    def __init__(self, channels=None, **kwargs):
        super().__init__(**kwargs)

    def energy(self, features):
        return ops.matmul(_transpose(features), features)  # (batch, C, C)

    def attend(self, energy):
        return ops.softmax(ops.max(energy, axis=-1, keepdims=True) - energy, axis=-1)

    def mix(self, attention, features):
        return ops.matmul(features, _transpose(attention))  # (batch, N, C)

    def combine(self, out, x):
        return self.gamma * ops.reshape(out, ops.shape(x)) + x

    def call(self, x):
        features = _positions(x)
        return self.combine(self.mix(self.attend(self.energy(features)), features), x)


# -- buggy: PAM ---------------------------------------------------------------------------


class PAMReadsNHWCAsNCHW(_PAM):
    """`B, C, H, W` unpacked on an NHWC tensor: reshapes (B, H, W, C) to (B, C, N)."""

    def qkv(self, x):
        b, h, w, _ = ops.shape(x)

        def as_cn(t):
            return ops.reshape(t, (b, ops.shape(t)[-1], h * w))

        query, key, value = (
            as_cn(conv(x)) for conv in (self.query_conv, self.key_conv, self.value_conv)
        )
        return _transpose(query), _transpose(key), value  # "NCHW" value kept as (B, C, N)

    def mix(self, attention, value):
        return ops.matmul(value, _transpose(attention))  # (B, C, N) reshaped as if NHWC


class PAMSoftmaxWrongAxis(_PAM):
    def attend(self, energy):
        return ops.softmax(energy, axis=1)


class PAMAttentionUntransposed(_PAM):
    def mix(self, attention, value):
        return ops.matmul(_transpose(attention), value)


class PAMQueryKeySwapped(_PAM):
    def energy(self, query, key):
        return ops.matmul(key, _transpose(query))


class PAMNoResidual(_PAM):
    def combine(self, out, x):
        return self.gamma * ops.reshape(out, ops.shape(x))


class PAMGradientBlocked(_PAM):
    """Forward exact; no gradient flows through the attention weights."""

    def attend(self, energy):
        return ops.stop_gradient(super().attend(energy))


class PAMFloat16Attention(_PAM):
    def attend(self, energy):
        return ops.cast(ops.softmax(ops.cast(energy, "float16"), axis=-1), energy.dtype)


class PAMSoftmaxSlightlyScaled(_PAM):
    """A softmax temperature of 1.001 (a leftover scale): a bug at the 1e-3 level, which
    only a check that knows float32's own error can see."""

    def attend(self, energy):
        return ops.softmax(energy * 1.001, axis=-1)


class PAMMixesBatch(_PAM):
    """Attention over the positions of the whole batch: right only when batch == 1."""

    def call(self, x):
        b, h, w, _c = ops.shape(x)
        query, key, value = self.qkv(x)
        flat = [ops.reshape(t, (1, b * h * w, ops.shape(t)[-1])) for t in (query, key, value)]
        out = self.mix(self.attend(self.energy(flat[0], flat[1])), flat[2])
        return self.combine(out, x)


class PAMFlattensColumnMajor(_PAM):
    """Positions flattened column-major (w * H + h), the result unflattened row-major."""

    def qkv(self, x):
        transposed = ops.transpose(x, (0, 2, 1, 3))  # (B, W, H, C): flattening it is column-major
        return super().qkv(transposed)

    def combine(self, out, x):
        return self.gamma * ops.reshape(out, ops.shape(x)) + x


class PAMWritesCNAsNHWC(_PAM):
    """The attention result kept as (B, C, N) and reshaped into NHWC without a transpose."""

    def mix(self, attention, value):
        return ops.matmul(_transpose(value), _transpose(attention))  # (B, C, N)


class PAMKernelsReadAsOIHW(_PAM):
    """Each 1x1 kernel applied as if Keras stored it (out, in): a reshape, not a transpose."""

    def qkv(self, x):
        def apply(conv):
            kernel = conv.kernel  # (1, 1, in, out)
            weight = ops.reshape(kernel, (kernel.shape[3], kernel.shape[2]))
            return _positions(ops.einsum("bhwi,oi->bhwo", x, weight) + conv.bias)

        return apply(self.query_conv), apply(self.key_conv), apply(self.value_conv)


class PAMAssumesSquareInput(_PAM):
    """Reshapes with H in place of W: crashes whenever H != W."""

    def combine(self, out, x):
        b, h, _, c = ops.shape(x)
        return self.gamma * ops.reshape(out, (b, h, h, c)) + x


class PAMGammaUnused(_PAM):
    """Holds gamma as a weight but never uses it: the attention term is scaled by 0."""

    def combine(self, out, x):
        return 0.0 * ops.reshape(out, ops.shape(x)) + x


class PAMGammaNotTrainable(_PAM):
    """gamma is a weight, but not a trainable one: training would never move it."""

    def build(self, input_shape):
        super().build(input_shape)
        self.gamma.trainable = False


class PAMTransposesSpatialAxes(_PAM):
    """Returns (B, W, H, C): H and W swapped on the way out."""

    def combine(self, out, x):
        b, h, w, c = ops.shape(x)
        result = self.gamma * ops.reshape(out, (b, h, w, c)) + x
        return ops.transpose(result, (0, 2, 1, 3))


class PAMNamesSwapped(_PAM):
    """Faithful math, but the convolution used as the query is the attribute key_conv, and
    the other way round: mapped by name, its weights land in the wrong places."""

    def qkv(self, x):
        convs = (self.key_conv, self.query_conv, self.value_conv)
        return tuple(_positions(conv(x)) for conv in convs)


# -- buggy: CAM ---------------------------------------------------------------------------


class CAMReadsNHWCAsNCHW(_CAM):
    def call(self, x):
        b, h, w, c = ops.shape(x)
        features = _transpose(ops.reshape(x, (b, c, h * w)))  # scrambled, then "(B, N, C)"
        return self.combine(self.mix(self.attend(self.energy(features)), features), x)


class CAMSoftmaxWrongAxis(_CAM):
    def attend(self, energy):
        return ops.softmax(ops.max(energy, axis=-1, keepdims=True) - energy, axis=1)


class CAMAttentionUntransposed(_CAM):
    def mix(self, attention, features):
        return ops.matmul(features, attention)


class CAMTemperatureAfterWarmUp(_CAM):
    """A softmax temperature that a hand-rolled schedule switches on after three calls,
    counted in a Python attribute (state that is not a weight): a fresh port is exact on its
    first example (the checker calls it three times for one), so a failure the search finds
    on a reused port passes when checked alone. No counterexample may be printed for it:
    its replay would pass."""

    calls = 0

    def attend(self, energy):
        self.calls += 1
        return super().attend(energy * (1.0 if self.calls <= 3 else 1.5))


class CAMWithoutMaxMinus(_CAM):
    def attend(self, energy):
        return ops.softmax(energy, axis=-1)


class CAMNoResidual(_CAM):
    def combine(self, out, x):
        return self.gamma * ops.reshape(out, ops.shape(x))


class CAMGradientBlocked(_CAM):
    def attend(self, energy):
        return ops.stop_gradient(super().attend(energy))


class CAMFloat16Attention(_CAM):
    def attend(self, energy):
        return ops.cast(super().attend(ops.cast(energy, "float16")), energy.dtype)


class CAMMixesBatch(_CAM):
    """One Gram matrix summed over the batch: right only when batch == 1."""

    def energy(self, features):
        gram = ops.einsum("bnc,bnd->cd", features, features)
        return ops.broadcast_to(gram, (ops.shape(features)[0], *ops.shape(gram)))


class CAMFlattensColumnMajor(_CAM):
    def call(self, x):
        features = _positions(ops.transpose(x, (0, 2, 1, 3)))  # column-major positions
        return self.combine(self.mix(self.attend(self.energy(features)), features), x)


# -- buggy: the converter -----------------------------------------------------------------


@dataclass(frozen=True)
class _ReshapedKernel(Layout):
    """OIHW reshaped to HWIO instead of transposed: shapes fit, values scramble."""

    def to_keras(self, array):
        o, i, kh, kw = array.shape
        return array.reshape(kh, kw, i, o)

    def to_torch(self, array):
        kh, kw, i, o = array.shape
        return array.reshape(o, i, kh, kw)


RESHAPED_KERNEL = _ReshapedKernel(
    "reshaped kernel", CONV_KERNEL.torch_layout, CONV_KERNEL.keras_layout, CONV_KERNEL.to_keras_axes
)
WRONG_AXES_KERNEL = Layout(
    "HWOI kernel", CONV_KERNEL.torch_layout, "HWOI (kH, kW, out, in)", (2, 3, 0, 1)
)


def bindings_with_kernel_layout(layout: Layout):
    """The bundled bindings, with every convolution kernel converted through ``layout``."""

    def bindings(port, reference):
        return [
            Binding(b.torch_key, b.variable, layout) if b.layout is CONV_KERNEL else b
            for b in bindings_for(port.layer)
        ]

    return bindings


# -- faithful -----------------------------------------------------------------------------


class PAMEinsum(_PAM):
    def energy(self, query, key):
        return ops.einsum("bnc,bmc->bnm", query, key)

    def mix(self, attention, value):
        return ops.einsum("bnm,bmc->bnc", attention, value)


class PAMRowChunked(_PAM):
    """Attention computed for 7 query rows at a time; the last chunk is the remainder."""

    chunk = 7

    def call(self, x):
        query, key, value = self.qkv(x)
        n = query.shape[1]
        chunks = [
            self.mix(self.attend(self.energy(query[:, i : i + self.chunk], key)), value)
            for i in range(0, n, self.chunk)
        ]
        return self.combine(ops.concatenate(chunks, axis=1), x)


class CAMEinsum(_CAM):
    def energy(self, features):
        return ops.einsum("bnc,bnd->bcd", features, features)

    def mix(self, attention, features):
        return ops.einsum("bcd,bnd->bnc", attention, features)


class CAMSoftmaxOfNegativeEnergy(_CAM):
    """softmax(rowmax - E) == softmax(-E): the max-minus step is only a shift."""

    def attend(self, energy):
        return ops.softmax(-energy, axis=-1)


def pam_channels_first(channels):
    """Faithful, and NCHW: the bundled PAM with data_format="channels_first"."""
    return PositionAttention(data_format="channels_first")


class PAMDropoutLeftOn(_PAM):
    """Dropout on the attention called in call() itself, where no training flag or Dropout
    layer turns it off: every call computes another output."""

    def attend(self, energy):
        return keras.random.dropout(ops.softmax(energy, axis=-1), 0.2)


class CAMShiftedByRowMean(_CAM):
    """Faithful though it looks wrong: softmax(rowmean - E) == softmax(-E) too (a per-row
    constant), and Keras' softmax subtracts the row's max itself."""

    def attend(self, energy):
        return ops.softmax(ops.mean(energy, axis=-1, keepdims=True) - energy, axis=-1)


class CAMShiftedByGlobalMax(_CAM):
    """Faithful though it looks wrong: one constant for the whole map shifts every row."""

    def attend(self, energy):
        return ops.softmax(ops.max(energy, axis=(1, 2), keepdims=True) - energy, axis=-1)


class PAMConv1D(keras.layers.Layer):
    """Faithful: the 1x1 convolutions written as Conv1D over the flattened positions, so
    their kernels are (1, C, C') where the reference's are (C', C, 1, 1)."""

    def __init__(self, channels=None, **kwargs):
        super().__init__(**kwargs)

    def build(self, input_shape):
        channels = input_shape[-1]
        self.query = keras.layers.Conv1D(channels // 8, 1)
        self.key = keras.layers.Conv1D(channels // 8, 1)
        self.value = keras.layers.Conv1D(channels, 1)
        for conv in (self.query, self.key, self.value):
            conv.build((None, None, channels))
        self.gamma = self.add_weight(shape=(1,), initializer="zeros", name="gamma")

    def call(self, x):
        shape = ops.shape(x)
        flat = ops.reshape(x, (shape[0], shape[1] * shape[2], shape[3]))
        query, key, value = self.query(flat), self.key(flat), self.value(flat)
        attention = ops.softmax(ops.einsum("bnc,bmc->bnm", query, key), axis=-1)
        return self.gamma * ops.reshape(ops.einsum("bnm,bmc->bnc", attention, value), shape) + x


class CAMThreeBugs(CAMWithoutMaxMinus, CAMAttentionUntransposed, CAMNoResidual):
    """The published CAM bug (no max-minus step, the attention applied transposed) and the
    residual forgotten: no single known bug nor pair explains it, a triple does."""
