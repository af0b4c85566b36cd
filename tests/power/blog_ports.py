"""Ports written the way blog posts and notebooks write them, for the ``--port`` tests:
functions of a Keras tensor with Conv2D layers built inline and static shapes read from
``x.shape``; and the two ways such code cannot hold weights."""

import keras
import tensorflow as tf
from keras import layers, ops


class Scale(layers.Layer):
    """gamma * x with gamma a tracked weight, initialised to 0."""

    def build(self, input_shape):
        self.gamma = self.add_weight(name="gamma", shape=(1,), initializer="zeros")

    def call(self, x):
        return self.gamma * x


def _pam_body(x, scale):
    _, h, w, c = x.shape  # static: the function is traced once per input shape
    query = layers.Reshape((h * w, c // 8))(layers.Conv2D(c // 8, 1, name="query")(x))
    key = layers.Reshape((h * w, c // 8))(layers.Conv2D(c // 8, 1, name="key")(x))
    value = layers.Reshape((h * w, c))(layers.Conv2D(c, 1, name="value")(x))
    attention = ops.softmax(ops.matmul(query, ops.transpose(key, (0, 2, 1))), axis=-1)
    out = layers.Reshape((h, w, c))(ops.matmul(attention, value))
    return scale(out) + x


def pam_function(channels):
    """Faithful: gamma lives in a small layer, so it is a tracked weight."""
    return lambda x: _pam_body(x, Scale(name="gamma"))


def pam_bare_gamma(channels):
    """gamma in a bare tf.Variable: the port cannot load or train it."""
    gamma = tf.Variable(tf.zeros(1), name="gamma")
    return lambda x: _pam_body(x, lambda out: gamma * out)


def cam_function(channels):
    """A faithful CAM written as a function."""
    scale = Scale(name="gamma")

    def cam(x):
        _, h, w, c = x.shape
        features = layers.Reshape((h * w, c))(x)
        energy = ops.matmul(ops.transpose(features, (0, 2, 1)), features)
        attention = ops.softmax(ops.max(energy, axis=-1, keepdims=True) - energy, axis=-1)
        out = layers.Reshape((h, w, c))(ops.matmul(features, ops.transpose(attention, (0, 2, 1))))
        return scale(out) + x

    return cam


class PAMFreshLayersEachCall(keras.layers.Layer):
    """Builds its convolutions inside call(): new random weights on every call."""

    def __init__(self, channels=None, **kwargs):
        super().__init__(**kwargs)

    def build(self, input_shape):
        self.gamma = self.add_weight(name="gamma", shape=(1,), initializer="zeros")

    def call(self, x):
        _, h, w, c = x.shape
        query = ops.reshape(layers.Conv2D(c // 8, 1)(x), (-1, h * w, c // 8))
        key = ops.reshape(layers.Conv2D(c // 8, 1)(x), (-1, h * w, c // 8))
        value = ops.reshape(layers.Conv2D(c, 1)(x), (-1, h * w, c))
        attention = ops.softmax(ops.matmul(query, ops.transpose(key, (0, 2, 1))), axis=-1)
        return self.gamma * ops.reshape(ops.matmul(attention, value), (-1, h, w, c)) + x


def pam_factory_that_raises(channels):
    raise RuntimeError("this factory is broken")


NOT_CALLABLE = 42
