"""PAM and CAM ports written the way they are published on GitHub and in blog posts (written
for this suite, not copied): static shapes read from ``x.shape`` and pinned at the first
build, ``use_bias=False``, weights named ``q``/``k``/``v`` and ``alpha``/``beta``, layers built
in ``call()``, ``gamma`` in a bare ``tf.Variable``, two bugs at once. Each class takes the
channel count like PyTorch's ``in_dim``, so the class is its own factory:
``parity check pam --port tests.power.published_ports:PAMPinned``. The standalone Keras 2
ones live in ``keras2_ports``.
"""

import tensorflow as tf
from keras import layers, ops


class PAMPinned(layers.Layer):
    """Faithful. Pins H, W and C in an ``input_spec`` at the first build and reshapes with
    the static sizes it saw then: it accepts only the shape it was built for."""

    def __init__(self, in_dim, **kwargs):
        super().__init__(**kwargs)
        self.in_dim = in_dim

    def build(self, input_shape):
        _, self.h, self.w, c = input_shape
        self.input_spec = layers.InputSpec(shape=(None, self.h, self.w, c))
        self.query_conv = layers.Conv2D(c // 8, 1)
        self.key_conv = layers.Conv2D(c // 8, 1)
        self.value_conv = layers.Conv2D(c, 1)
        self.gamma = self.add_weight(name="gamma", shape=(1,), initializer="zeros")

    def attend(self, energy):
        return tf.nn.softmax(energy, axis=-1)

    def call(self, x):
        n, c = self.h * self.w, self.in_dim
        query = tf.reshape(self.query_conv(x), (-1, n, c // 8))
        key = tf.reshape(self.key_conv(x), (-1, n, c // 8))
        value = tf.reshape(self.value_conv(x), (-1, n, c))
        attention = self.attend(tf.matmul(query, key, transpose_b=True))
        out = tf.reshape(tf.matmul(attention, value), (-1, self.h, self.w, c))
        return self.gamma * out + x


class PAMPinnedSoftmaxWrongAxis(PAMPinned):
    """Pinned shapes and a softmax over the query positions."""

    def attend(self, energy):
        return tf.nn.softmax(energy, axis=1)


def pam_static_batch(channels):
    """Faithful function port that reshapes with the batch read from ``x.shape``."""

    def pam(x):
        batch, height, width, c = x.shape
        query_conv = layers.Conv2D(c // 8, 1, name="query", input_shape=(height, width, c))
        query = ops.reshape(query_conv(x), (batch, -1, c // 8))
        key = ops.reshape(layers.Conv2D(c // 8, 1, name="key")(x), (batch, -1, c // 8))
        value = ops.reshape(layers.Conv2D(c, 1, name="value")(x), (batch, -1, c))
        attention = ops.softmax(ops.matmul(query, ops.transpose(key, (0, 2, 1))))
        out = ops.reshape(ops.matmul(attention, value), (batch, height, width, c))
        return _Alpha(name="alpha")(out) + x

    return pam


class _Alpha(layers.Layer):
    def build(self, input_shape):
        self.alpha = self.add_weight(name="alpha", shape=(1,), initializer="zeros")

    def call(self, x):
        return self.alpha * x


class PAMNoBias(layers.Layer):
    """Faithful but for ``use_bias=False`` on query, key and value; names ``q``/``k``/``v``."""

    def __init__(self, in_dim, **kwargs):
        super().__init__(**kwargs)
        self.q = layers.Conv2D(in_dim // 8, 1, use_bias=False)
        self.k = layers.Conv2D(in_dim // 8, 1, use_bias=False)
        self.v = layers.Conv2D(in_dim, 1, use_bias=False)
        self.alpha = self.add_weight(name="alpha", shape=(1,), initializer="zeros")

    def flatten(self, y):
        b, h, w, c = tf.unstack(tf.shape(y))
        return tf.reshape(y, (b, h * w, c))

    def call(self, x):
        query, key = self.flatten(self.q(x)), self.flatten(self.k(x))
        value = self.flatten(self.v(x))
        attention = tf.nn.softmax(tf.matmul(query, key, transpose_b=True))
        return self.alpha * tf.reshape(tf.matmul(attention, value), tf.shape(x)) + x


class PAMNoBiasReadsNCHW(PAMNoBias):
    """No biases, and PyTorch's ``.view(B, -1, H * W)`` carried over to NHWC tensors."""

    def call(self, x):
        b, h, w, c = tf.unstack(tf.shape(x))
        query = tf.transpose(tf.reshape(self.q(x), (b, -1, h * w)), (0, 2, 1))  # (B, N, C')
        key = tf.reshape(self.k(x), (b, -1, h * w))  # (B, C', N)
        value = tf.reshape(self.v(x), (b, -1, h * w))  # (B, C, N)
        attention = tf.nn.softmax(tf.matmul(query, key))
        out = tf.matmul(value, attention, transpose_b=True)  # (B, C, N)
        return self.alpha * tf.reshape(out, (b, h, w, c)) + x


class PAMKeyNamedQuery(layers.Layer):
    """Faithful math, but the convolution named ``k`` computes the query and ``q`` the key."""

    def __init__(self, in_dim, **kwargs):
        super().__init__(**kwargs)
        self.k = layers.Conv2D(in_dim // 8, 1)
        self.q = layers.Conv2D(in_dim // 8, 1)
        self.v = layers.Conv2D(in_dim, 1)
        self.gamma = self.add_weight(name="gamma", shape=(1,), initializer="zeros")

    def call(self, x):
        b, h, w, c = tf.unstack(tf.shape(x))
        query = tf.reshape(self.k(x), (b, h * w, -1))
        key = tf.reshape(self.q(x), (b, h * w, -1))
        value = tf.reshape(self.v(x), (b, h * w, c))
        attention = tf.nn.softmax(tf.matmul(query, key, transpose_b=True))
        return self.gamma * tf.reshape(tf.matmul(attention, value), tf.shape(x)) + x


class PAMConvsInCall(layers.Layer):
    """Creates its convolutions inside ``call()``: fresh random weights on every call."""

    def __init__(self, in_dim, **kwargs):
        super().__init__(**kwargs)
        self.gamma = self.add_weight(name="gamma", shape=(1,), initializer="zeros")

    def call(self, x):
        b, h, w, c = tf.unstack(tf.shape(x))
        c8 = x.shape[-1] // 8
        query = tf.reshape(layers.Conv2D(c8, 1)(x), (b, h * w, c8))
        key = tf.reshape(layers.Conv2D(c8, 1)(x), (b, h * w, c8))
        value = tf.reshape(layers.Conv2D(x.shape[-1], 1)(x), (b, h * w, c))
        attention = tf.nn.softmax(tf.matmul(query, key, transpose_b=True))
        return self.gamma * tf.reshape(tf.matmul(attention, value), tf.shape(x)) + x


class PAMBatchNormQueryKey(layers.Layer):
    """Another architecture: query and key are C -> C convolutions with BatchNorm and ReLU."""

    def __init__(self, in_dim, **kwargs):
        super().__init__(**kwargs)
        self.query_conv = layers.Conv2D(in_dim, 1)
        self.query_bn = layers.BatchNormalization()
        self.key_conv = layers.Conv2D(in_dim, 1)
        self.key_bn = layers.BatchNormalization()
        self.value_conv = layers.Conv2D(in_dim, 1)
        self.gamma = self.add_weight(name="gamma", shape=(1,), initializer="zeros")

    def call(self, x, training=None):
        b, h, w, c = tf.unstack(tf.shape(x))
        query = tf.nn.relu(self.query_bn(self.query_conv(x), training=training))
        key = tf.nn.relu(self.key_bn(self.key_conv(x), training=training))
        query, key = tf.reshape(query, (b, h * w, c)), tf.reshape(key, (b, h * w, c))
        value = tf.reshape(self.value_conv(x), (b, h * w, c))
        attention = tf.nn.softmax(tf.matmul(query, key, transpose_b=True))
        return self.gamma * tf.reshape(tf.matmul(attention, value), tf.shape(x)) + x


class _ConvBatchNormReLU(layers.Layer):
    """A 1x1 convolution, BatchNorm and ReLU: the block segmentation libraries reuse."""

    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        self.conv = layers.Conv2D(filters, 1)
        self.bn = layers.BatchNormalization()

    def call(self, x, training=None):
        return tf.nn.relu(self.bn(self.conv(x), training=training))


class PAMConvBatchNormReLU(layers.Layer):
    """Another architecture that keeps the reference's shapes: query, key and value are the
    reference's convolutions (C -> C/8, C/8, C), each followed by BatchNorm and ReLU, in
    blocks whose names say no role. A BatchNorm's gamma and beta have a convolution bias's
    shape: mapped by order, they would take the key's bias and hide themselves from the
    list of what no reference parameter maps to."""

    def __init__(self, in_dim, **kwargs):
        super().__init__(**kwargs)
        self.block_1 = _ConvBatchNormReLU(in_dim // 8)
        self.block_2 = _ConvBatchNormReLU(in_dim // 8)
        self.block_3 = _ConvBatchNormReLU(in_dim)
        self.gamma = self.add_weight(name="gamma", shape=(1,), initializer="zeros")

    def call(self, x, training=None):
        b, h, w, _ = tf.unstack(tf.shape(x))
        query, key, value = (
            tf.reshape(block(x, training=training), (b, h * w, -1))
            for block in (self.block_1, self.block_2, self.block_3)
        )
        attention = tf.nn.softmax(tf.matmul(query, key, transpose_b=True))
        return self.gamma * tf.reshape(tf.matmul(attention, value), tf.shape(x)) + x


class CAMBareGamma(layers.Layer):
    """Faithful math, with ``gamma`` in a bare ``tf.Variable`` that Keras does not track."""

    def __init__(self, in_dim, **kwargs):
        super().__init__(**kwargs)
        self.gamma = tf.Variable(tf.zeros(1), name="gamma")

    def call(self, x):
        b, h, w, c = tf.unstack(tf.shape(x))
        features = tf.reshape(x, (b, h * w, c))
        energy = tf.matmul(features, features, transpose_a=True)
        attention = tf.nn.softmax(tf.reduce_max(energy, -1, keepdims=True) - energy)
        out = tf.matmul(features, attention, transpose_b=True)
        return self.gamma * tf.reshape(out, tf.shape(x)) + x


class CAMBareTemperature(layers.Layer):
    """Faithful: ``gamma`` a tracked weight, and a softmax temperature of 1 kept in a bare
    ``tf.Variable`` that holds no parameter of the reference."""

    def __init__(self, in_dim, **kwargs):
        super().__init__(**kwargs)
        self.gamma = self.add_weight(name="gamma", shape=(1,), initializer="zeros")
        self.temperature = tf.Variable(1.0, name="temperature")

    def call(self, x):
        b, h, w, c = tf.unstack(tf.shape(x))
        features = tf.reshape(x, (b, h * w, c))
        energy = tf.matmul(features, features, transpose_a=True)
        logits = (tf.reduce_max(energy, -1, keepdims=True) - energy) / self.temperature
        out = tf.matmul(features, tf.nn.softmax(logits), transpose_b=True)
        return self.gamma * tf.reshape(out, tf.shape(x)) + x


class CAMBareGammaSoftmaxTransposed(CAMBareGamma):
    """Two defects that used to hide each other: ``gamma`` in a bare ``tf.Variable``, and
    the published CAM bug underneath (no max-minus step, the attention applied
    transposed)."""

    def call(self, x):
        b, h, w, c = tf.unstack(tf.shape(x))
        features = tf.reshape(x, (b, h * w, c))
        attention = tf.nn.softmax(tf.matmul(features, features, transpose_a=True))
        return self.gamma * tf.reshape(tf.matmul(features, attention), tf.shape(x)) + x


class CAMSoftmaxTransposed(layers.Layer):
    """The CAM bug many published ports share: ``softmax(energy)`` without the max-minus
    step, and the attention applied transposed. ``beta`` is its gamma."""

    def __init__(self, in_dim, **kwargs):
        super().__init__(**kwargs)
        self.beta = self.add_weight(name="beta", shape=(1,), initializer="zeros")

    def call(self, x):
        b, h, w, c = tf.unstack(tf.shape(x))
        features = tf.reshape(x, (b, h * w, c))  # (B, N, C)
        attention = tf.nn.softmax(tf.matmul(features, features, transpose_a=True))  # (B, C, C)
        out = tf.matmul(features, attention)  # attention^T applied
        return self.beta * tf.reshape(out, tf.shape(x)) + x


def cam_views_nhwc_as_nchw(channels):
    """A function port that carries PyTorch's ``x.view(B, C, -1)`` over as it is: the NHWC
    tensor is viewed as (B, C, N), and the result viewed back the same way."""
    scale = _Alpha(name="beta")

    def cam(x):
        batch, height, width, c = x.shape
        features = ops.reshape(x, (batch, c, height * width))  # (B, C, N), wrongly
        energy = ops.matmul(features, ops.transpose(features, (0, 2, 1)))
        attention = ops.softmax(ops.max(energy, -1, keepdims=True) - energy)
        out = ops.reshape(ops.matmul(attention, features), (batch, height, width, c))
        return scale(out) + x

    return cam


class CAMFirstSampleAttention(layers.Layer):
    """Two bugs, one of them unnamed: ``softmax(energy)`` without the max-minus step, and
    sample 0's attention applied to every sample (an indexing slip). No known bug or pair
    explains it, and its minimal counterexample has batch 1: nothing may be named as the
    cause, a leak across the batch least of all."""

    def __init__(self, in_dim, **kwargs):
        super().__init__(**kwargs)
        self.gamma = self.add_weight(name="gamma", shape=(1,), initializer="zeros")

    def call(self, x):
        b, h, w, c = tf.unstack(tf.shape(x))
        features = tf.reshape(x, (b, h * w, c))
        attention = tf.nn.softmax(tf.matmul(features, features, transpose_a=True))[0]
        out = tf.einsum("bnc,dc->bnd", features, attention)
        return self.gamma * tf.reshape(out, tf.shape(x)) + x
