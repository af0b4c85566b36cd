"""A port written for TensorFlow 2.16 and later, where ``tf.keras`` is Keras 3: it imports
Keras through TensorFlow and uses ``keras.ops``, which tf.keras 2 does not have. Its
``tf.keras`` import alone would send it to tf.keras 2, where it cannot be built."""

from tensorflow import keras


class PAM(keras.layers.Layer):
    """Faithful."""

    def __init__(self, channels, **kwargs):
        super().__init__(**kwargs)
        self.query = keras.layers.Conv2D(channels // 8, 1)
        self.key = keras.layers.Conv2D(channels // 8, 1)
        self.value = keras.layers.Conv2D(channels, 1)
        self.gamma = self.add_weight(shape=(1,), initializer="zeros", name="gamma")

    def call(self, x):
        ops = keras.ops
        b, h, w, c = ops.shape(x)
        query = ops.reshape(self.query(x), (b, h * w, -1))
        key = ops.reshape(self.key(x), (b, h * w, -1))
        value = ops.reshape(self.value(x), (b, h * w, c))
        attention = ops.softmax(ops.matmul(query, ops.transpose(key, (0, 2, 1))), axis=-1)
        return self.gamma * ops.reshape(ops.matmul(attention, value), (b, h, w, c)) + x
