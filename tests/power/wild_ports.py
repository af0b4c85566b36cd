"""PAM and CAM ports written in the styles published ports use (written for this suite, not
copied): Layer subclasses with ``q``/``k``/``v`` names, functions of a Keras tensor with layers
built inline, gammas named ``alpha`` or ``scale``, static shapes read from ``x.shape`` at build,
``einsum``, ``Dense`` in place of 1x1 convolutions, ``tensorflow`` ops called directly. Their
bugs lie outside the catalogue the other power modules plant (transformer habits, gates,
normalisations, copy-paste slips); the faithful ones look wrong and are not. For the
localization's power tests: ``EXPECTED`` says, for each port, its pair, whether it is a bug,
and the reference line (``reference_torch/attention.py``) that must be the first one whose
value the port never computes (None for a faithful port). Each class takes the channel count
first and is its own factory; each function is ``make(channels)``.
"""

from __future__ import annotations

import math

import tensorflow as tf
from keras import layers, ops

# -- helpers -------------------------------------------------------------------------------


class _Scale(layers.Layer):
    """``gamma * x``, the gamma a tracked one-element weight (its name says its role)."""

    def __init__(self, weight_name="gamma", **kwargs):
        super().__init__(**kwargs)
        self.weight_name = weight_name

    def build(self, input_shape):
        self.factor = self.add_weight(name=self.weight_name, shape=(1,), initializer="zeros")

    def call(self, x):
        return self.factor * x


def _flat(t):
    """(B, H, W, C) -> (B, N, C) with dynamic sizes."""
    shape = ops.shape(t)
    return ops.reshape(t, (shape[0], shape[1] * shape[2], shape[3]))


def _tf_flat(t):
    b, h, w, c = tf.unstack(tf.shape(t))
    return tf.reshape(t, (b, h * w, c))


class _ConvPAM(layers.Layer):
    """The usual skeleton: query/key/value 1x1 convolutions and gamma, built for C channels."""

    def __init__(self, channels, **kwargs):
        super().__init__(**kwargs)
        self.channels = channels
        self.query_conv = layers.Conv2D(channels // 8, 1)
        self.key_conv = layers.Conv2D(channels // 8, 1)
        self.value_conv = layers.Conv2D(channels, 1)

    def build(self, input_shape):
        for conv in (self.query_conv, self.key_conv, self.value_conv):
            conv.build(input_shape)
        self.gamma = self.add_weight(name="gamma", shape=(1,), initializer="zeros")


class _GammaCAM(layers.Layer):
    def __init__(self, channels, **kwargs):
        super().__init__(**kwargs)
        self.channels = channels

    def build(self, input_shape):
        self.gamma = self.add_weight(name="gamma", shape=(1,), initializer="zeros")


# -- buggy: PAM ----------------------------------------------------------------------------


class PAMPreNormalized(layers.Layer):
    """Transformer pre-norm habit: query, key and value read x layer-normalised over channels."""

    def __init__(self, channels, **kwargs):
        super().__init__(**kwargs)
        self.norm = layers.LayerNormalization(center=False, scale=False)
        self.q = layers.Conv2D(channels // 8, 1)
        self.k = layers.Conv2D(channels // 8, 1)
        self.v = layers.Conv2D(channels, 1)
        self.gamma = self.add_weight(name="gamma", shape=(1,), initializer="zeros")

    def call(self, x):
        normed = self.norm(x)
        query, key, value = (_flat(conv(normed)) for conv in (self.q, self.k, self.v))
        attention = ops.softmax(ops.matmul(query, ops.transpose(key, (0, 2, 1))), axis=-1)
        return self.gamma * ops.reshape(ops.matmul(attention, value), ops.shape(x)) + x


class PAMKeyFromQueryConv(_ConvPAM):
    """Copy-paste slip: the key is computed by the query convolution (key_conv never used)."""

    def call(self, x):
        query = _tf_flat(self.query_conv(x))
        key = _tf_flat(self.query_conv(x))
        value = _tf_flat(self.value_conv(x))
        attention = tf.nn.softmax(tf.matmul(query, key, transpose_b=True), axis=-1)
        return self.gamma * tf.reshape(tf.matmul(attention, value), tf.shape(x)) + x


class PAMQueryPreScaled(layers.Layer):
    """Transformer habit: the query scaled by 1/sqrt(C // 8) before the energy's einsum."""

    def __init__(self, channels, **kwargs):
        super().__init__(**kwargs)
        self.q = layers.Conv2D(channels // 8, 1, name="q")
        self.k = layers.Conv2D(channels // 8, 1, name="k")
        self.v = layers.Conv2D(channels, 1, name="v")
        self.scale = (channels // 8) ** -0.5
        self.gamma = self.add_weight(name="gamma", shape=(1,), initializer="zeros")

    def call(self, x):
        query = self.q(x) * self.scale
        energy = ops.einsum("bhwc,bijc->bhwij", query, self.k(x))
        shape = ops.shape(energy)
        n = shape[1] * shape[2]
        attention = ops.reshape(ops.softmax(ops.reshape(energy, (shape[0], n, n)), axis=-1), shape)
        return self.gamma * ops.einsum("bhwij,bijc->bhwc", attention, self.v(x)) + x


class PAMCosineEnergy(layers.Layer):
    """Cosine attention: query and key L2-normalised over channels before their product."""

    def __init__(self, in_dim, **kwargs):
        super().__init__(**kwargs)
        self.in_dim = in_dim

    def build(self, input_shape):
        _, self.h, self.w, c = input_shape  # static sizes, read once
        self.query_conv = layers.Conv2D(c // 8, 1)
        self.key_conv = layers.Conv2D(c // 8, 1)
        self.value_conv = layers.Conv2D(c, 1)
        self.alpha = self.add_weight(name="alpha", shape=(1,), initializer="zeros")

    def call(self, x):
        n, c = self.h * self.w, self.in_dim
        query = ops.reshape(self.query_conv(x), (-1, n, c // 8))
        key = ops.reshape(self.key_conv(x), (-1, n, c // 8))
        value = ops.reshape(self.value_conv(x), (-1, n, c))
        query, key = ops.normalize(query, axis=-1), ops.normalize(key, axis=-1)
        attention = ops.softmax(ops.matmul(query, ops.transpose(key, (0, 2, 1))))
        return self.alpha * ops.reshape(ops.matmul(attention, value), (-1, self.h, self.w, c)) + x


def pam_energy_over_sqrt_channels(channels):
    """Scaled dot-product habit with the wrong size: the energy divided by sqrt(C)."""
    scale = _Scale(name="gamma")

    def pam(x):
        _, h, w, c = x.shape
        query = layers.Reshape((h * w, c // 8))(layers.Conv2D(c // 8, 1, name="query")(x))
        key = layers.Reshape((h * w, c // 8))(layers.Conv2D(c // 8, 1, name="key")(x))
        value = layers.Reshape((h * w, c))(layers.Conv2D(c, 1, name="value")(x))
        energy = ops.matmul(query, ops.transpose(key, (0, 2, 1)))
        attention = ops.softmax(energy / math.sqrt(c), axis=-1)
        out = layers.Reshape((h, w, c))(ops.matmul(attention, value))
        return scale(out) + x

    return pam


class PAMSigmoidAttention(_ConvPAM):
    """Gating habit: each energy squashed by a sigmoid where the reference takes a softmax."""

    def call(self, x):
        query, key = _tf_flat(self.query_conv(x)), _tf_flat(self.key_conv(x))
        attention = tf.nn.sigmoid(tf.matmul(query, key, transpose_b=True))
        out = tf.matmul(attention, _tf_flat(self.value_conv(x)))
        return self.gamma * tf.reshape(out, tf.shape(x)) + x


class PAMDiagonalMasked(_ConvPAM):
    """Each position barred from attending to itself: the energy's diagonal set to -1e9."""

    def call(self, x):
        query, key, value = (
            _flat(conv(x)) for conv in (self.query_conv, self.key_conv, self.value_conv)
        )
        energy = ops.matmul(query, ops.transpose(key, (0, 2, 1)))
        masked = energy - 1e9 * ops.eye(ops.shape(energy)[-1], dtype=energy.dtype)
        attention = ops.softmax(masked, axis=-1)
        return self.gamma * ops.reshape(ops.matmul(attention, value), ops.shape(x)) + x


class PAMValueIsInput(_ConvPAM):
    """CAM's ``value = x`` carried into PAM: the attention weighs x, value_conv is unused."""

    def call(self, x):
        query, key = _flat(self.query_conv(x)), _flat(self.key_conv(x))
        attention = ops.softmax(ops.matmul(query, ops.transpose(key, (0, 2, 1))), axis=-1)
        return self.gamma * ops.reshape(ops.matmul(attention, _flat(x)), ops.shape(x)) + x


class PAMReLUValue(layers.Layer):
    """The value convolution with ``activation="relu"`` (the conv itself computed right)."""

    def __init__(self, channels, **kwargs):
        super().__init__(**kwargs)
        self.q = layers.Conv2D(channels // 8, 1)
        self.k = layers.Conv2D(channels // 8, 1)
        self.v = layers.Conv2D(channels, 1, activation="relu")
        self.gamma = self.add_weight(name="gamma", shape=(1,), initializer="zeros")

    def call(self, x):
        query, key, value = _flat(self.q(x)), _flat(self.k(x)), _flat(self.v(x))
        attention = ops.softmax(ops.matmul(query, ops.transpose(key, (0, 2, 1))), axis=-1)
        return self.gamma * ops.reshape(ops.matmul(attention, value), ops.shape(x)) + x


class PAMFirstSampleAttention(_ConvPAM):
    """An indexing slip: sample 0's attention map weighs every sample's values."""

    def call(self, x):
        query, key = _tf_flat(self.query_conv(x)), _tf_flat(self.key_conv(x))
        attention = tf.nn.softmax(tf.matmul(query, key, transpose_b=True), axis=-1)
        out = tf.einsum("nm,bmc->bnc", attention[0], _tf_flat(self.value_conv(x)))
        return self.gamma * tf.reshape(out, tf.shape(x)) + x


class PAMOnePlusGamma(layers.Layer):
    """Dense projections; the attention term scaled by (1 + gamma) instead of gamma."""

    def __init__(self, channels, **kwargs):
        super().__init__(**kwargs)
        self.query = layers.Dense(channels // 8)
        self.key = layers.Dense(channels // 8)
        self.value = layers.Dense(channels)
        self.gamma = self.add_weight(name="gamma", shape=(), initializer="zeros")

    def call(self, x):
        flat = _flat(x)
        query, key, value = self.query(flat), self.key(flat), self.value(flat)
        attention = ops.softmax(ops.einsum("bnc,bmc->bnm", query, key), axis=-1)
        out = ops.reshape(ops.matmul(attention, value), ops.shape(x))
        return (1.0 + self.gamma) * out + x


class PAMTanhGate(_ConvPAM):
    """Bounded-gate habit: the residual scale is tanh(alpha), not alpha itself."""

    def build(self, input_shape):
        for conv in (self.query_conv, self.key_conv, self.value_conv):
            conv.build(input_shape)
        self.alpha = self.add_weight(name="alpha", shape=(1,), initializer="zeros")

    def call(self, x):
        query, key = _tf_flat(self.query_conv(x)), _tf_flat(self.key_conv(x))
        attention = tf.nn.softmax(tf.matmul(query, key, transpose_b=True))
        out = tf.reshape(tf.matmul(attention, _tf_flat(self.value_conv(x))), tf.shape(x))
        return tf.tanh(self.alpha) * out + x


# -- buggy: CAM ----------------------------------------------------------------------------


class CAMRowWise(_GammaCAM):
    """Channel attention computed per image row (positions of one row only), not over all."""

    def call(self, x):
        energy = ops.einsum("bhwc,bhwd->bhcd", x, x)  # (B, H, C, C)
        attention = ops.softmax(ops.max(energy, axis=-1, keepdims=True) - energy, axis=-1)
        out = ops.einsum("bhcd,bhwd->bhwc", attention, x)
        return self.gamma * out + x


class CAMCentred(_GammaCAM):
    """Covariance habit: the energy of features centred by their mean over positions."""

    def call(self, x):
        features = _flat(x)  # (B, N, C)
        centred = features - ops.mean(features, axis=1, keepdims=True)
        energy = ops.matmul(ops.transpose(centred, (0, 2, 1)), centred)
        attention = ops.softmax(ops.max(energy, axis=-1, keepdims=True) - energy, axis=-1)
        out = ops.matmul(features, ops.transpose(attention, (0, 2, 1)))
        return self.gamma * ops.reshape(out, ops.shape(x)) + x


class CAMEnergyOverPositions(_GammaCAM):
    """The Gram matrix averaged over positions: the energy divided by N after the product."""

    def call(self, x):
        b, h, w, c = tf.unstack(tf.shape(x))
        features = tf.reshape(x, (b, h * w, c))
        energy = tf.matmul(features, features, transpose_a=True)
        energy = energy / tf.cast(h * w, energy.dtype)
        energy_new = tf.reduce_max(energy, axis=-1, keepdims=True) - energy
        out = tf.matmul(features, tf.nn.softmax(energy_new), transpose_b=True)
        return self.gamma * tf.reshape(out, tf.shape(x)) + x


class CAMMaxOverColumns(_GammaCAM):
    """The max taken over axis 1: per column, not per row. As the energy is symmetric, that is
    the reference's energy_new transposed (held, up to layout); the softmax is what goes wrong."""

    def call(self, x):
        features = _flat(x)
        energy = ops.matmul(ops.transpose(features, (0, 2, 1)), features)
        energy_new = ops.max(energy, axis=1, keepdims=True) - energy
        attention = ops.softmax(energy_new, axis=-1)
        out = ops.matmul(features, ops.transpose(attention, (0, 2, 1)))
        return self.gamma * ops.reshape(out, ops.shape(x)) + x


class CAMSumNormalized(_GammaCAM):
    """energy_new normalised by its row sums where the reference takes a softmax."""

    def call(self, x):
        features = _tf_flat(x)
        energy = tf.matmul(features, features, transpose_a=True)
        energy_new = tf.reduce_max(energy, -1, keepdims=True) - energy
        attention = energy_new / tf.reduce_sum(energy_new, -1, keepdims=True)
        out = tf.matmul(features, attention, transpose_b=True)
        return self.gamma * tf.reshape(out, tf.shape(x)) + x


def cam_softmax_flattened(channels):
    """The softmax taken over the whole flattened C x C map, not over each row."""
    scale = _Scale("scale", name="scale")

    def cam(x):
        _, h, w, c = x.shape
        features = layers.Reshape((h * w, c))(x)
        energy = ops.matmul(ops.transpose(features, (0, 2, 1)), features)
        energy_new = ops.max(energy, axis=-1, keepdims=True) - energy
        attention = layers.Reshape((c, c))(ops.softmax(layers.Flatten()(energy_new), axis=-1))
        out = ops.matmul(features, ops.transpose(attention, (0, 2, 1)))
        return scale(layers.Reshape((h, w, c))(out)) + x

    return cam


class CAMBatchMeanAttention(_GammaCAM):
    """The attention averaged over the batch (a shared map) and applied to every sample."""

    def call(self, x):
        features = _flat(x)
        energy = ops.matmul(ops.transpose(features, (0, 2, 1)), features)
        attention = ops.softmax(ops.max(energy, axis=-1, keepdims=True) - energy, axis=-1)
        shared = ops.mean(attention, axis=0, keepdims=True)
        out = ops.einsum("bnd,xcd->bnc", features, shared)
        return self.gamma * ops.reshape(out, ops.shape(x)) + x


class CAMGammaXInside(_GammaCAM):
    """gamma * x added to the attention's output before the residual adds it again."""

    def call(self, x):
        features = _flat(x)
        energy = ops.matmul(ops.transpose(features, (0, 2, 1)), features)
        attention = ops.softmax(ops.max(energy, axis=-1, keepdims=True) - energy, axis=-1)
        out = ops.reshape(ops.matmul(features, ops.transpose(attention, (0, 2, 1))), ops.shape(x))
        out = out + self.gamma * x
        return self.gamma * out + x


class CAMResidualDoubled(_GammaCAM):
    """The skip connection counted twice: the residual is x + x."""

    def call(self, x):
        features = _tf_flat(x)
        energy = tf.matmul(features, features, transpose_a=True)
        attention = tf.nn.softmax(tf.reduce_max(energy, -1, keepdims=True) - energy)
        out = tf.reshape(tf.matmul(features, attention, transpose_b=True), tf.shape(x))
        residual = x + x
        return self.gamma * out + residual


# -- faithful ------------------------------------------------------------------------------


class CAMRowMinShift(_GammaCAM):
    """Faithful: softmax(rowmin - energy) == softmax(-energy), a per-row shift."""

    def call(self, x):
        features = _tf_flat(x)
        energy = tf.matmul(features, features, transpose_a=True)
        attention = tf.nn.softmax(tf.reduce_min(energy, -1, keepdims=True) - energy)
        out = tf.matmul(features, attention, transpose_b=True)
        return self.gamma * tf.reshape(out, tf.shape(x)) + x


def cam_negated_gram(channels):
    """Faithful: the energy computed negated, -(F^T F), and softmaxed as it is."""
    alpha = _Scale("alpha", name="alpha")

    def cam(x):
        shape = ops.shape(x)
        features = ops.reshape(x, (shape[0], -1, shape[3]))
        negated = ops.matmul(-ops.transpose(features, (0, 2, 1)), features)
        attention = ops.softmax(negated, axis=-1)
        out = ops.reshape(ops.matmul(features, ops.transpose(attention, (0, 2, 1))), shape)
        return alpha(out) + x

    return cam


class PAMEinsumTransposedIndices(_ConvPAM):
    """Faithful: the reference's (value @ attention^T) as (B, C, N) by einsum, then back."""

    def call(self, x):
        query, key, value = (
            _flat(conv(x)) for conv in (self.query_conv, self.key_conv, self.value_conv)
        )
        attention = ops.softmax(ops.einsum("bnc,bmc->bnm", query, key), axis=-1)
        out = ops.einsum("bcm,bnm->bcn", ops.transpose(value, (0, 2, 1)), attention)
        return self.gamma * ops.reshape(ops.transpose(out, (0, 2, 1)), ops.shape(x)) + x


class PAMValueAfterAttention(_ConvPAM):
    """Faithful: the value convolution applied after the attention. It is affine and the
    attention's rows sum to 1, so A (x W + b) == (A x) W + b."""

    def call(self, x):
        query, key = _flat(self.query_conv(x)), _flat(self.key_conv(x))
        attention = ops.softmax(ops.matmul(query, ops.transpose(key, (0, 2, 1))), axis=-1)
        mixed = ops.reshape(ops.matmul(attention, _flat(x)), ops.shape(x))
        return self.gamma * self.value_conv(mixed) + x


class PAMDense(layers.Layer):
    """Faithful: Dense layers over the flattened positions in place of 1x1 convolutions."""

    def __init__(self, channels, **kwargs):
        super().__init__(**kwargs)
        self.q = layers.Dense(channels // 8, name="q")
        self.k = layers.Dense(channels // 8, name="k")
        self.v = layers.Dense(channels, name="v")
        self.gamma = self.add_weight(name="gamma", shape=(1,), initializer="zeros")

    def call(self, x):
        flat = _flat(x)
        energy = ops.matmul(self.q(flat), ops.transpose(self.k(flat), (0, 2, 1)))
        out = ops.matmul(ops.softmax(energy, axis=-1), self.v(flat))
        return self.gamma * ops.reshape(out, ops.shape(x)) + x


def pam_inline_alpha(channels):
    """Faithful function port: inline layers named q/k/v, gamma held by a layer named alpha."""

    def pam(x):
        query = _flat(layers.Conv2D(channels // 8, 1, name="q")(x))
        key = _flat(layers.Conv2D(channels // 8, 1, name="k")(x))
        value = _flat(layers.Conv2D(channels, 1, name="v")(x))
        attention = ops.softmax(ops.matmul(query, ops.transpose(key, (0, 2, 1))))
        out = ops.reshape(ops.matmul(attention, value), ops.shape(x))
        return _Scale("alpha", name="alpha")(out) + x

    return pam


class CAMGammaBeforeAttention(_GammaCAM):
    """Faithful: gamma scales the value before the attention; A (gamma x) == gamma (A x)."""

    def call(self, x):
        features = _flat(x)
        energy = ops.matmul(ops.transpose(features, (0, 2, 1)), features)
        attention = ops.softmax(ops.max(energy, axis=-1, keepdims=True) - energy, axis=-1)
        out = ops.matmul(self.gamma * features, ops.transpose(attention, (0, 2, 1)))
        return ops.reshape(out, ops.shape(x)) + x


class PAMHandWrittenSoftmax(_ConvPAM):
    """Faithful: the softmax written out by hand, exp(e - rowmax) over its row sum."""

    def call(self, x):
        query, key = _tf_flat(self.query_conv(x)), _tf_flat(self.key_conv(x))
        energy = tf.matmul(query, key, transpose_b=True)
        exp = tf.exp(energy - tf.reduce_max(energy, axis=-1, keepdims=True))
        attention = exp / tf.reduce_sum(exp, axis=-1, keepdims=True)
        out = tf.matmul(attention, _tf_flat(self.value_conv(x)))
        return self.gamma * tf.reshape(out, tf.shape(x)) + x


class CAMEnergyIndicesSwapped(_GammaCAM):
    """Faithful: the energy's einsum indices swapped ("bnc,bnd->bdc"); a Gram matrix is
    symmetric, so E^T == E."""

    def call(self, x):
        features = _flat(x)
        energy = ops.einsum("bnc,bnd->bdc", features, features)
        attention = ops.softmax(ops.max(energy, axis=-1, keepdims=True) - energy, axis=-1)
        out = ops.einsum("bcd,bnd->bnc", attention, features)
        return self.gamma * ops.reshape(out, ops.shape(x)) + x


class PAMScaledLikeATransformer(layers.Layer):
    """A hand port whose energy is divided by sqrt(C // 8) after the product, as
    transformers scale theirs: the docs' example of an unseen bug (the README's is its
    twin, the scale written on the energy's own line)."""

    def __init__(self, channels, **kwargs):
        super().__init__(**kwargs)
        self.q = layers.Conv2D(channels // 8, 1)
        self.k = layers.Conv2D(channels // 8, 1)
        self.v = layers.Conv2D(channels, 1)
        self.gamma = self.add_weight(shape=(1,), initializer="zeros", name="gamma")

    def call(self, x):
        b, h, w, c = ops.shape(x)
        q = ops.reshape(self.q(x), (b, h * w, -1))
        k = ops.reshape(self.k(x), (b, h * w, -1))
        v = ops.reshape(self.v(x), (b, h * w, c))
        energy = ops.matmul(q, ops.transpose(k, (0, 2, 1)))
        energy = energy / ops.sqrt(float(c // 8))  # as transformers do
        attention = ops.softmax(energy, axis=-1)
        out = ops.reshape(ops.matmul(attention, v), (b, h, w, c))
        return self.gamma * out + x


# -- expectations --------------------------------------------------------------------------


class PAMFusedQKV(layers.Layer):
    """Faithful: one 1x1 convolution computes query, key and value at once (C -> C/8 + C/8
    + C channels), split afterwards, as attention blocks often write it; its kernel holds the
    reference's three in slices of its last axis."""

    def __init__(self, channels, **kwargs):
        super().__init__(**kwargs)
        self.reduced = channels // 8
        self.qkv = layers.Conv2D(2 * self.reduced + channels, 1, name="qkv")
        self.gamma = self.add_weight(shape=(1,), initializer="zeros", name="gamma")

    def split(self, fused):
        r = self.reduced
        return fused[..., :r], fused[..., r : 2 * r], fused[..., 2 * r :]

    def call(self, x):
        query, key, value = (_flat(t) for t in self.split(self.qkv(x)))
        attention = ops.softmax(ops.matmul(query, ops.transpose(key, (0, 2, 1))), axis=-1)
        return self.gamma * ops.reshape(ops.matmul(attention, value), ops.shape(x)) + x


class PAMFusedKQV(PAMFusedQKV):
    """The fused convolution split as key, query, value: a port of another weight order,
    which maps in the reference's order only with a weight map naming its slices."""

    def split(self, fused):
        key, query, value = super().split(fused)
        return query, key, value


class _Weight(layers.Layer):
    """A variable as a layer of its own, named by nothing but "weight" (converters write
    parameters used by plain arithmetic so)."""

    def build(self, input_shape):
        self.weight = self.add_weight(name="weight", shape=(1,), initializer="zeros")

    def call(self, x):
        return self.weight * x


class PAMConvertedStyle(layers.Layer):
    """Faithful, named as a converter names it: convolutions ``conv2d``, ``conv2d_1``,
    ``conv2d_2`` and gamma in a ``weight_layer`` made after them. At 8 channels the query's
    and key's biases have one element, as gamma has: each must go beside its kernel."""

    def __init__(self, channels, **kwargs):
        super().__init__(**kwargs)
        self.convs = [layers.Conv2D(n, 1) for n in (channels // 8, channels // 8, channels)]
        self.weight_layer = _Weight()

    def call(self, x):
        q, k, v = (_flat(conv(x)) for conv in self.convs)
        attention = ops.softmax(ops.matmul(q, ops.transpose(k, (0, 2, 1))), axis=-1)
        out = ops.reshape(ops.matmul(attention, v), ops.shape(x))
        return self.weight_layer(out) + x


_QUERY = "query = self.query_conv(x).view(B, -1, N).permute(0, 2, 1)"
_KEY = "key = self.key_conv(x).view(B, -1, N)"
_ENERGY = "energy = torch.bmm(query, key)"
_PAM_ATTENTION = "attention = self.softmax(energy)"
_VALUE = "value = self.value_conv(x).view(B, -1, N)"
_PAM_OUT = "out = torch.bmm(value, attention.permute(0, 2, 1))"
_CAM_ENERGY_NEW = "energy_new = torch.max(energy, -1, keepdim=True)[0].expand_as(energy) - energy"
_CAM_ATTENTION = "attention = self.softmax(energy_new)"
_CAM_OUT = "out = torch.bmm(attention, value).view(B, C, H, W)"
_RETURN = "return self.gamma * out + x"

EXPECTED = {
    "PAMScaledLikeATransformer": ("pam", "bug", _PAM_ATTENTION),
    # PAM bugs
    "PAMPreNormalized": ("pam", "bug", _QUERY),
    "PAMKeyFromQueryConv": ("pam", "bug", _KEY),
    "PAMQueryPreScaled": ("pam", "bug", _ENERGY),
    "PAMCosineEnergy": ("pam", "bug", _ENERGY),
    "pam_energy_over_sqrt_channels": ("pam", "bug", _PAM_ATTENTION),
    "PAMSigmoidAttention": ("pam", "bug", _PAM_ATTENTION),
    "PAMDiagonalMasked": ("pam", "bug", _PAM_ATTENTION),
    "PAMValueIsInput": ("pam", "bug", _VALUE),
    "PAMReLUValue": ("pam", "bug", _PAM_OUT),  # the conv's output before the ReLU is held
    "PAMFirstSampleAttention": ("pam", "bug", _PAM_OUT),  # exact at batch 1
    "PAMOnePlusGamma": ("pam", "bug", _RETURN),
    "PAMTanhGate": ("pam", "bug", _RETURN),
    # CAM bugs
    "CAMRowWise": ("cam", "bug", _ENERGY),
    "CAMCentred": ("cam", "bug", _ENERGY),
    "CAMEnergyOverPositions": ("cam", "bug", _CAM_ENERGY_NEW),
    "CAMMaxOverColumns": ("cam", "bug", _CAM_ATTENTION),
    "CAMSumNormalized": ("cam", "bug", _CAM_ATTENTION),
    "cam_softmax_flattened": ("cam", "bug", _CAM_ATTENTION),
    "CAMBatchMeanAttention": ("cam", "bug", _CAM_OUT),  # exact at batch 1
    "CAMGammaXInside": ("cam", "bug", _RETURN),
    "CAMResidualDoubled": ("cam", "bug", _RETURN),
    # faithful
    "PAMFusedQKV": ("pam", "faithful", None),
    "PAMConvertedStyle": ("pam", "faithful", None),
    "CAMRowMinShift": ("cam", "faithful", None),
    "cam_negated_gram": ("cam", "faithful", None),
    "PAMEinsumTransposedIndices": ("pam", "faithful", None),
    "PAMValueAfterAttention": ("pam", "faithful", None),
    "PAMDense": ("pam", "faithful", None),
    "pam_inline_alpha": ("pam", "faithful", None),
    "CAMGammaBeforeAttention": ("cam", "faithful", None),
    "PAMHandWrittenSoftmax": ("pam", "faithful", None),
    "CAMEnergyIndicesSwapped": ("cam", "faithful", None),
}
"""Port name -> (pair, "bug" or "faithful", a substring of the reference line that must be the
first one whose value the port never computes; None for a faithful port)."""


class CAMUnshiftedLogSumExp(_GammaCAM):
    """A softmax written as exp(z - log(sum(exp(z)))) without the row max taken out first:
    exp overflows to inf once z passes 88 (float32's largest exponent), and before that
    log(sum) rounds to ulp(z), an error of about |z| ulps in every weight of a saturated row."""

    def call(self, x):
        features = _flat(x)
        energy = ops.matmul(ops.transpose(features, (0, 2, 1)), features)
        z = ops.max(energy, axis=-1, keepdims=True) - energy
        log_sum = ops.log(ops.sum(ops.exp(z), axis=-1, keepdims=True))
        attention = ops.exp(z - log_sum)
        out = ops.matmul(features, ops.transpose(attention, (0, 2, 1)))
        return self.gamma * ops.reshape(out, ops.shape(x)) + x
