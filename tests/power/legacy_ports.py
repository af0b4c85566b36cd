"""Ports written for tf.keras 2 (TensorFlow 2.6-2.15 style): ``keras.backend`` functions,
TensorFlow ops on Keras tensors, ``Lambda`` layers. They import only with tf-keras installed
and ``TF_USE_LEGACY_KERAS=1`` set before TensorFlow: ``parity check --legacy-keras`` sets it
(and detects these from their source)."""

import tensorflow as tf
from tensorflow.keras import backend as K  # noqa: N812 -- the convention of the period
from tensorflow.keras import layers


class PAMLegacy(layers.Layer):
    """Faithful: keras.backend.batch_dot and K.softmax, as tf.keras 2 ports wrote them."""

    def __init__(self, channels=None, **kwargs):
        super().__init__(**kwargs)

    def build(self, input_shape):
        channels = int(input_shape[-1])
        self.query_conv = layers.Conv2D(channels // 8, 1, name="query_conv")
        self.key_conv = layers.Conv2D(channels // 8, 1, name="key_conv")
        self.value_conv = layers.Conv2D(channels, 1, name="value_conv")
        self.gamma = self.add_weight(name="gamma", shape=(1,), initializer="zeros")
        super().build(input_shape)

    def attend(self, energy):
        return K.softmax(energy, axis=-1)

    def call(self, x):
        shape = K.shape(x)
        b, h, w, c = shape[0], shape[1], shape[2], shape[3]
        query = K.reshape(self.query_conv(x), (b, h * w, -1))
        key = K.reshape(self.key_conv(x), (b, h * w, -1))
        value = K.reshape(self.value_conv(x), (b, h * w, c))
        attention = self.attend(K.batch_dot(query, key, axes=(2, 2)))  # (B, N, N)
        out = K.batch_dot(attention, value, axes=(2, 1))  # (B, N, C)
        return self.gamma * K.reshape(out, shape) + x


class PAMLegacySoftmaxWrongAxis(PAMLegacy):
    def attend(self, energy):
        return K.softmax(energy, axis=1)


def cam_legacy_function(channels):
    """Faithful CAM as a function: tf ops on Keras tensors, in a Lambda layer."""
    gamma_layer = _Scale(name="gamma")

    def attention(x):
        shape = tf.shape(x)
        features = tf.reshape(x, (shape[0], -1, shape[3]))  # (B, N, C)
        energy = tf.matmul(features, features, transpose_a=True)  # (B, C, C)
        energy = tf.reduce_max(energy, axis=-1, keepdims=True) - energy
        out = tf.matmul(features, tf.nn.softmax(energy, axis=-1), transpose_b=True)
        return tf.reshape(out, shape)

    return lambda x: layers.Add()([x, gamma_layer(layers.Lambda(attention)(x))])


class _Scale(layers.Layer):
    def build(self, input_shape):
        self.gamma = self.add_weight(name="gamma", shape=(1,), initializer="zeros")

    def call(self, x):
        return self.gamma * x
