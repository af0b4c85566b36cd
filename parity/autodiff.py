"""Outputs and vector-Jacobian products of a Keras port, through the backend's autodiff."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras
import numpy as np


def as_tuple(outputs) -> tuple:
    return tuple(outputs) if isinstance(outputs, (tuple, list)) else (outputs,)


def forward(layer, x: np.ndarray) -> tuple[np.ndarray, ...]:
    """The port's outputs on ``x``, as NumPy arrays."""
    return tuple(keras.ops.convert_to_numpy(y) for y in as_tuple(layer(x)))


def vjp(
    layer,
    x: np.ndarray,
    cotangents: Callable[[tuple], Sequence[np.ndarray]],
    variables: Sequence,
) -> tuple[tuple[np.ndarray, ...], np.ndarray, list[np.ndarray]]:
    """Outputs, and the gradients of sum(output * cotangent) w.r.t. ``x`` and ``variables``.

    ``cotangents(outputs)`` gives one cotangent per output. A variable the outputs do not
    depend on gets a zero gradient.
    """
    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise NotImplementedError(
            f"Gradients on the {backend!r} Keras backend are not supported yet; "
            "set KERAS_BACKEND=tensorflow."
        )
    import tensorflow as tf

    x = tf.convert_to_tensor(x)
    watched = [v.value for v in variables]
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(x)
        tape.watch(watched)
        outputs = as_tuple(layer(x))
    grads = tape.gradient(
        list(outputs),
        [x, *watched],
        output_gradients=[
            tf.convert_to_tensor(c, dtype=y.dtype)
            for c, y in zip(cotangents(outputs), outputs, strict=True)
        ],
    )
    grads = [
        np.zeros(tuple(s.shape), dtype=np.float32) if g is None else g.numpy()
        for g, s in zip(grads, [x, *watched], strict=True)
    ]
    return tuple(y.numpy() for y in outputs), grads[0], grads[1:]
