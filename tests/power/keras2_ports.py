"""PAM and CAM written for standalone Keras 2, as many GitHub projects and blog posts are:
``from keras.layers import ...``, ``import keras.backend as K``, ``K.reshape``,
``K.batch_dot``, ``K.permute_dimensions``. Under Keras 3 they cannot run (those backend
functions are gone); ``parity check`` detects them and runs them under tf.keras 2 with
``keras`` resolved to it. Written for this suite."""

import keras.backend as K  # noqa: N812 -- the convention of the period
from keras.layers import Conv2D, Layer


class PAM_Module(Layer):  # noqa: N801 -- named as published ports name it
    """Faithful."""

    def __init__(self, in_dim, **kwargs):
        super().__init__(**kwargs)
        self.in_dim = in_dim

    def build(self, input_shape):
        self.query_conv = Conv2D(self.in_dim // 8, 1)
        self.key_conv = Conv2D(self.in_dim // 8, 1)
        self.value_conv = Conv2D(self.in_dim, 1)
        self.gamma = self.add_weight(name="gamma", shape=(1,), initializer="zeros")
        super().build(input_shape)

    def call(self, x):
        shape = K.shape(x)
        b, h, w, c = shape[0], shape[1], shape[2], shape[3]
        proj_query = K.reshape(self.query_conv(x), (b, h * w, -1))
        proj_key = K.reshape(self.key_conv(x), (b, h * w, -1))
        proj_value = K.reshape(self.value_conv(x), (b, h * w, c))
        attention = K.softmax(K.batch_dot(proj_query, proj_key, axes=(2, 2)))
        out = K.batch_dot(attention, proj_value, axes=(2, 1))
        return self.gamma * K.reshape(out, shape) + x


class CAM_Module(Layer):  # noqa: N801
    """The CAM bug shared by many published ports: softmax(energy) without the max-minus
    step, and the attention applied transposed."""

    def __init__(self, in_dim, **kwargs):
        super().__init__(**kwargs)

    def build(self, input_shape):
        self.gamma = self.add_weight(name="gamma", shape=(1,), initializer="zeros")
        super().build(input_shape)

    def call(self, x):
        shape = K.shape(x)
        proj = K.reshape(x, (shape[0], -1, shape[3]))  # (B, N, C)
        energy = K.batch_dot(K.permute_dimensions(proj, (0, 2, 1)), proj)  # (B, C, C)
        attention = K.softmax(energy)
        out = K.batch_dot(proj, attention)  # attention^T applied
        return self.gamma * K.reshape(out, shape) + x


def pam_function(in_dim):
    """Faithful, as a function of a Keras tensor: layers built inline, sizes (the batch
    too) read from the static shape, keras.backend ops on Keras tensors."""

    def pam(x):
        b, h, w, c = K.int_shape(x)
        query = K.reshape(Conv2D(c // 8, 1, name="query_conv")(x), (b, h * w, c // 8))
        key = K.reshape(Conv2D(c // 8, 1, name="key_conv")(x), (b, h * w, c // 8))
        value = K.reshape(Conv2D(c, 1, name="value_conv")(x), (b, h * w, c))
        attention = K.softmax(K.batch_dot(query, key, axes=(2, 2)))
        out = K.reshape(K.batch_dot(attention, value, axes=(2, 1)), (b, h, w, c))
        return _Gamma(name="gamma")(out) + x

    return pam


class _Gamma(Layer):
    def build(self, input_shape):
        self.gamma = self.add_weight(name="gamma", shape=(1,), initializer="zeros")
        super().build(input_shape)

    def call(self, x):
        return self.gamma * x
