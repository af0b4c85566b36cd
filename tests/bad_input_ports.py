"""Ports that cannot be checked at all: the factory does not give a Keras tensor back.

Written the way a hurried port is: a function of a Keras tensor that builds its layers
inline and forgets its ``return``.
"""

import keras
from keras import layers, ops


def pam_that_forgets_to_return(channels):
    def pam(x):
        query = layers.Conv2D(channels // 8, 1, name="query")(x)
        key = layers.Conv2D(channels // 8, 1, name="key")(x)
        value = layers.Conv2D(channels, 1, name="value")(x)
        _, height, width, _ = x.shape
        energy = ops.einsum("bhwc,bijc->bhwij", query, key)
        attention = ops.softmax(ops.reshape(energy, (-1, height * width, height * width)))
        values = ops.reshape(value, (-1, height * width, channels))
        out = ops.einsum("bnm,bmc->bnc", attention, values)
        out = ops.reshape(out, (-1, height, width, channels)) + x

    return pam


def pam_returning_a_shape(channels):
    def pam(x):
        return keras.ops.shape(x)  # a tuple of ints, not a tensor

    return pam


def pam_in_pytorch(channels):
    """The reference itself handed over as the port."""
    from reference_torch import PAM_Module

    return PAM_Module(channels)


def _cam_returning(transform):
    from impl_keras import ChannelAttention

    class Transformed(ChannelAttention):
        def call(self, inputs):
            return transform(super().call(inputs))

    return Transformed()


def cam_returning_int32(channels):
    return _cam_returning(lambda out: ops.cast(out * 100, "int32"))


def cam_returning_float16(channels):
    return _cam_returning(lambda out: ops.cast(out, "float16"))


def cam_returning_nan(channels):
    return _cam_returning(lambda out: out * float("nan"))
