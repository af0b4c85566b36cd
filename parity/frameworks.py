"""Keras 3, and the legacy tf.keras 2 that ports written for TensorFlow 2.6-2.15 use.

tf.keras 2 lives on as the ``tf-keras`` package, and TensorFlow hands it out as ``tf.keras``
only when ``TF_USE_LEGACY_KERAS=1`` is set before TensorFlow is imported. Its layers are not
Keras 3 layers, and its weights are plain ``tf.Variable`` s named without their layer. The
helpers here let the rest of the engine treat both alike.
"""

from __future__ import annotations

import importlib.util
import os
import re

# No module-level import of Keras or TensorFlow: the command decides on legacy mode first.

LEGACY_ENV = "TF_USE_LEGACY_KERAS"
_LEGACY_SOURCE = re.compile(r"\b(tf\.keras|tensorflow\.keras|tf_keras)\b")


def legacy_keras_enabled() -> bool:
    return os.environ.get(LEGACY_ENV, "").lower() in ("1", "true", "yes")


def port_keras():
    """The Keras a port is written against: tf.keras 2 in legacy mode, else Keras 3."""
    if legacy_keras_enabled():
        import tf_keras

        return tf_keras
    import keras

    return keras


def layer_classes() -> tuple[type, ...]:
    import keras

    classes = [keras.layers.Layer]
    if legacy_keras_enabled():
        classes.append(port_keras().layers.Layer)
    return tuple(classes)


def is_layer(obj) -> bool:
    return isinstance(obj, layer_classes())


def variable_path(variable) -> str:
    """Keras 3's path ('pam/query_conv/kernel'), or a tf.Variable's name without ':0'."""
    path = getattr(variable, "path", None)
    return path if isinstance(path, str) else variable.name.removesuffix(":0")


def tf_variable(variable):
    """The tf.Variable behind a weight (Keras 3 on TensorFlow wraps one)."""
    import tensorflow as tf

    return variable if isinstance(variable, tf.Variable) else variable.value


def numpy_dtype(variable):
    dtype = variable.dtype
    return getattr(dtype, "as_numpy_dtype", dtype)


def looks_legacy(target: str) -> bool:
    """Whether the module of ``MODULE:FACTORY`` is written against tf.keras (read, not run)."""
    module = target.partition(":")[0].partition("=")[-1] or target.partition(":")[0]
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return False
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return False
    try:
        with open(spec.origin, encoding="utf-8") as handle:
            return bool(_LEGACY_SOURCE.search(handle.read()))
    except OSError:
        return False


def backend_prefix() -> str:
    """``KERAS_BACKEND=...`` when checks run on a backend other than TensorFlow, so that a
    replay command runs where its failure happened."""
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    return "" if backend == "tensorflow" else f"KERAS_BACKEND={backend} "
