"""A port written for Keras 2's functional API: TensorFlow ops applied to Keras tensors.
Nothing in its source says Keras 2 (``from keras import layers`` is Keras 3 too); Keras 3
refuses the ops at trace time, and ``parity check`` says to use ``--keras 2``."""

import tensorflow as tf
from keras import layers


class _Scale(layers.Layer):
    def build(self, input_shape):
        self.gamma = self.add_weight(name="gamma", shape=(1,), initializer="zeros")

    def call(self, x):
        return self.gamma * x


def cam_tf_ops_function(channels):
    """Faithful, written for Keras 2's functional API: TensorFlow ops on Keras tensors
    (Keras 3 refuses them; run it with --keras 2)."""
    scale = _Scale(name="gamma")

    def cam(x):
        batch, height, width, c = x.shape
        features = tf.reshape(x, (batch, height * width, c))
        energy = tf.matmul(features, features, transpose_a=True)
        attention = tf.nn.softmax(tf.reduce_max(energy, -1, keepdims=True) - energy)
        out = tf.reshape(tf.matmul(features, attention, transpose_b=True), tf.shape(x))
        return scale(out) + x

    return cam
