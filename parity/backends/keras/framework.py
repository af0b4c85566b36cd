"""Keras 3, on whichever backend it runs (TensorFlow, JAX, PyTorch): the
``parity.backends.protocol`` implementation for ports written against Keras 3.

Building lives in ``keras_build``, running and differentiating (per backend) in
``keras_autodiff``; this module joins them and holds the small Keras-specific rest: the
dtype policy, dropout, the loss and optimizers of the training step, per-layer outputs.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from types import ModuleType

import keras
import numpy as np

from parity.backends.keras import autodiff as keras_autodiff
from parity.backends.keras import build as keras_build
from parity.backends.protocol import PortInstance
from parity.backends.which_keras import numpy_dtype


class KerasFramework:
    """Keras 3 on its configured backend."""

    def __init__(self):
        self.backend = keras.backend.backend()
        self.name = f"keras 3 ({self.backend})"
        self.modes = keras_autodiff.MODES.get(self.backend, ("eager",))

    # -- the Keras a port is written against ---------------------------------------------
    def port_keras(self) -> ModuleType:
        return keras

    def layer_classes(self) -> tuple[type, ...]:
        return (keras.layers.Layer,)

    # -- modes ---------------------------------------------------------------------------
    def default_mode(self) -> str:
        """``jit`` on JAX (eager JAX retraces every operation: ~1.6 s an example against
        ~0.4 s compiled, measured on PAM); ``eager`` elsewhere."""
        return "jit" if self.backend == "jax" else "eager"

    def check_mode(self, mode: str) -> None:
        if mode not in self.modes:
            raise ValueError(
                f"Expected one of {self.modes} on the {self.backend} backend. "
                f"Received: mode={mode!r}"
            )

    # -- weights -------------------------------------------------------------------------
    def build(self, factory: Callable, channels: int, x: np.ndarray) -> PortInstance:
        return keras_build.build(factory, channels, x, self.port_keras(), self.layer_classes())

    def weights(self, layer) -> list:
        return list(layer.weights)

    def assign(self, variable, value: np.ndarray) -> None:
        variable.assign(np.asarray(value, dtype=numpy_dtype(variable)))

    def to_numpy(self, value) -> np.ndarray:
        return np.asarray(keras.ops.convert_to_numpy(value))

    def owners(self, layer) -> dict[int, object]:
        owners = {}
        for sub in layer._flatten_layers(include_self=True):
            for variable in [*sub._trainable_variables, *sub._non_trainable_variables]:
                owners[id(variable)] = sub
        return owners

    def intermediates(self, layer, x: np.ndarray):
        """Every tensor the port computes, on TensorFlow (``keras.intermediates``)."""
        if self.backend != "tensorflow":
            return None
        from parity.backends.keras.intermediates import intermediates

        return intermediates(layer, x)

    def exported(self, artifact):
        from parity.backends.keras.artifact_framework import ArtifactFramework
        from parity.core.errors import UsageError

        if self.backend != "tensorflow":
            raise UsageError(
                f"--export {artifact.name} exports through TensorFlow: run it with "
                "KERAS_BACKEND=tensorflow"
            )
        return ArtifactFramework(self, artifact)

    def save_weights(self, layer, path: str) -> None:
        _one_layer_model(layer).save_weights(path)

    def load_weights(self, layer, path: str) -> None:
        _one_layer_model(layer).load_weights(path)

    # -- running -------------------------------------------------------------------------
    def forward(self, layer, x: np.ndarray, mode: str = "eager") -> tuple[np.ndarray, ...]:
        return keras_autodiff.forward(layer, x, mode)

    def vjp(self, layer, x, cotangents, variables: Sequence, mode: str = "eager"):
        return keras_autodiff.vjp(layer, x, cotangents, variables, mode)

    def train_step(self, layer, x, targets, data_format, variables, optimizer):
        def loss_of(outputs):
            logits = [
                y if data_format == "channels_last" else keras.ops.moveaxis(y, 1, -1)
                for y in outputs
            ]
            labels = targets([tuple(y.shape) for y in outputs])
            return sum(
                keras.ops.mean(keras.losses.sparse_categorical_crossentropy(t, y, from_logits=True))
                for y, t in zip(logits, labels, strict=True)
            )

        return keras_autodiff.train_step(layer, x, loss_of, variables, _keras_optimizer(optimizer))

    @contextlib.contextmanager
    def dtype_policy(self, name: str):
        previous = keras.config.dtype_policy()
        keras.config.set_dtype_policy(name)
        try:
            yield
        finally:
            keras.config.set_dtype_policy(previous)

    @contextlib.contextmanager
    def full_tracebacks(self):
        filtering = keras.config.is_traceback_filtering_enabled()
        keras.config.disable_traceback_filtering()
        try:
            yield
        finally:
            if filtering:
                keras.config.enable_traceback_filtering()

    @contextlib.contextmanager
    def dropout_off(self, layer):
        dropouts = [
            sub
            for sub in layer._flatten_layers(include_self=False)
            if isinstance(sub, keras.layers.Dropout)
            or type(sub).__name__.startswith("SpatialDropout")
        ]
        rates = [d.rate for d in dropouts]
        for dropout in dropouts:
            dropout.rate = 0.0
        try:
            yield
        finally:
            for dropout, rate in zip(dropouts, rates, strict=True):
                dropout.rate = rate

    @contextlib.contextmanager
    def recording_outputs(self, layers: dict[str, object], into: dict):
        originals = {}
        try:
            for path, layer in layers.items():
                original = layer.call

                def call(*args, _original=original, _path=path, **kwargs):
                    output = _original(*args, **kwargs)
                    into.setdefault(_path, self.to_numpy(_first_tensor(output)))
                    return output

                originals[path] = original
                layer.call = call
            yield
        finally:
            for path, original in originals.items():
                layers[path].call = original


def _first_tensor(value):
    while isinstance(value, (tuple, list)):
        value = value[0]
    return value


def _one_layer_model(layer):
    """The one-layer functional model whose .weights.h5 layout ``parity convert`` writes."""
    inputs = keras.Input(shape=(None, None, layer.input_spec.axes[-1]))
    return keras.Model(inputs, layer(inputs))


def _keras_optimizer(optimizer):
    """``parity.core.optimizers.Optimizer`` as Keras spells it. Keras' Adam adds epsilon to sqrt(v)
    before the bias correction, PyTorch's after it; epsilon * sqrt(1 - beta2) here makes the first
    step identical (later steps drift apart by design of the two libraries)."""
    if optimizer.name == "sgd":
        return keras.optimizers.SGD(
            learning_rate=optimizer.learning_rate, momentum=optimizer.momentum
        )
    beta_1, beta_2 = optimizer.betas
    return keras.optimizers.Adam(
        learning_rate=optimizer.learning_rate,
        beta_1=beta_1,
        beta_2=beta_2,
        epsilon=optimizer.epsilon * math.sqrt(1.0 - beta_2),
    )


FRAMEWORK = KerasFramework()
