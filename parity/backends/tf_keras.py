"""tf.keras 2 (the ``tf-keras`` package): the ``parity.backends.protocol`` implementation for ports
written against Keras 2, used in legacy mode (``TF_USE_LEGACY_KERAS=1``, see
``parity.backends.which_keras``).

Its layers are not Keras 3 layers and its weights are plain ``tf.Variable`` s, but they run
on TensorFlow as Keras 3's TensorFlow backend does: the same ``tf.GradientTape`` and
``tf.function`` paths serve both, so this implementation differs from Keras 3's only in the
Keras a port is built with. The engine's own Keras 3 layers (the bundled ports) still build
here too.
"""

from __future__ import annotations

from types import ModuleType

import keras
import tf_keras

from parity.backends.keras.framework import KerasFramework


class TfKerasFramework(KerasFramework):
    """tf.keras 2 ports, run by TensorFlow."""

    def __init__(self):
        super().__init__()
        self.name = f"tf.keras {tf_keras.__version__} ({self.backend})"

    def port_keras(self) -> ModuleType:
        return tf_keras

    def layer_classes(self) -> tuple[type, ...]:
        return (keras.layers.Layer, tf_keras.layers.Layer)

    def exported(self, artifact):
        """Exported by TensorFlow's own tools, as ``Model.export`` exports a Keras 3 model
        (``parity.backends.keras.export``)."""
        from parity.backends.keras.artifact_framework import ArtifactFramework

        return ArtifactFramework(self, artifact)


FRAMEWORK = TfKerasFramework()
