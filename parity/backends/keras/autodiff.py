"""Outputs, vector-Jacobian products and training steps of a Keras port, through the
backend's own autodiff (the Keras side of ``parity.backends.protocol``).

TensorFlow: ``tf.GradientTape``; JAX: ``jax.vjp`` over the layer called in a
``keras.StatelessScope`` (:func:`stateless_call`); PyTorch: ``torch.autograd``. ``mode``
picks how the port runs: ``eager`` everywhere, ``function`` (``tf.function``) and ``xla``
(``tf.function(jit_compile=True)``) on TensorFlow, ``jit`` (``jax.jit``) on JAX. Compiled
functions are kept per layer and retrace per input shape; on JAX all are dropped every
``JAX_PROGRAMS_KEPT`` new shapes.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import keras
import numpy as np

from parity.backends.protocol import as_tuple

MODES = {
    "tensorflow": ("eager", "function", "xla"),
    "jax": ("eager", "jit"),
    "torch": ("eager",),
}


def _numpy(value) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(value))


JAX_PROGRAMS_KEPT = 100
"""New input shapes run on JAX before every compiled program is dropped
(``jax.clear_caches``). Each program holds memory maps (about 70 per PAM example) and Linux
allows a process 65,530 (``vm.max_map_count``): past that XLA aborts the process. Two
random-seed runs of ``tests/test_parity.py`` on JAX did, after about 820 examples each."""

_jax_shapes: set = set()
_train_steps = itertools.count()


def _bound_jax_programs(layer, kind: str, shape) -> None:
    """Count a new input shape (it compiles, eager or not); past ``JAX_PROGRAMS_KEPT``,
    drop every compiled program first (a dropped one compiles again when needed)."""
    key = (id(layer), kind, tuple(shape))
    if key in _jax_shapes:
        return
    if len(_jax_shapes) >= JAX_PROGRAMS_KEPT:
        import jax

        jax.clear_caches()
        _jax_shapes.clear()
    _jax_shapes.add(key)


def _compiled(layer, key, build):
    cache = layer.__dict__.setdefault("_parity_compiled", {})
    if key not in cache:
        cache[key] = build()
    return cache[key]


# -- forward -------------------------------------------------------------------------------------


def forward(layer, x: np.ndarray, mode: str = "eager") -> tuple[np.ndarray, ...]:
    """The port's outputs on ``x`` (inference), as NumPy arrays."""
    backend = keras.backend.backend()
    if backend == "jax":
        _bound_jax_programs(layer, "forward", np.shape(x))
    if mode == "eager":
        return tuple(_numpy(y) for y in as_tuple(layer(x)))
    if backend == "tensorflow":
        import tensorflow as tf

        run = _compiled(
            layer,
            ("forward", mode),
            lambda: tf.function(
                lambda x: as_tuple(layer(x)), jit_compile=mode == "xla", reduce_retracing=True
            ),
        )
        return tuple(_numpy(y) for y in run(tf.constant(x)))
    if backend == "jax":
        import jax

        def stateless(trainable, non_trainable, x):
            outputs, _ = stateless_call(layer, trainable, non_trainable, x)
            return as_tuple(outputs)

        run = _compiled(layer, ("forward", mode), lambda: jax.jit(stateless))
        values = _values(layer)
        return tuple(_numpy(y) for y in run(*values, x))
    raise ValueError(f"mode={mode!r} is not available on the {backend} backend")


def _values(layer):
    return (
        [v.value for v in layer.trainable_variables],
        [v.value for v in layer.non_trainable_variables],
    )


def stateless_call(layer, trainable_values, non_trainable_values, x, **kwargs):
    """``layer(x, **kwargs)`` on these weight values: (outputs, the non-trainable values after).

    Not ``Layer.stateless_call``: that calls ``call`` itself, so ``training=True`` crashes a
    layer whose ``call`` takes no ``training`` and never reaches sub-layers through Keras'
    call context, and inputs skip the cast to the compute dtype. ``layer(x)`` inside a
    ``StatelessScope`` runs the port as its users run it.
    """
    mapping = [
        *zip(layer.trainable_variables, trainable_values, strict=True),
        *zip(layer.non_trainable_variables, non_trainable_values, strict=True),
    ]
    with keras.StatelessScope(state_mapping=mapping) as scope:
        outputs = layer(x, **kwargs)
    return outputs, [scope.get_current_value(v) for v in layer.non_trainable_variables]


# -- vector-Jacobian products ---------------------------------------------------------------------


def vjp(
    layer,
    x: np.ndarray,
    cotangents: Callable[[tuple], Sequence[np.ndarray]] | Sequence[np.ndarray],
    variables: Sequence,
    mode: str = "eager",
) -> tuple[tuple[np.ndarray, ...], np.ndarray, list[np.ndarray]]:
    """Outputs, and the gradients of sum(output * cotangent) w.r.t. ``x`` and ``variables``.

    ``cotangents`` holds one cotangent per output (NumPy, the outputs' layout), or is a
    function of the outputs that gives them; a compiled mode then learns the outputs' shapes
    first (TensorFlow: a forward pass; JAX: a trace). A variable the outputs do not depend
    on gets a zero gradient.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return _vjp_tensorflow(layer, x, cotangents, variables, mode)
    if backend == "jax":
        return _vjp_jax(layer, x, cotangents, variables, mode)
    if backend == "torch":
        return _vjp_torch(layer, x, cotangents, variables)
    raise NotImplementedError(f"Gradients on the {backend!r} Keras backend are not supported")


def _cotangents(cotangents, outputs, convert):
    """One cotangent per output, converted to the output's dtype by ``convert(c, dtype)``.
    ``outputs`` may be arrays or shape-and-dtype structures (``jax.eval_shape``'s)."""
    given = cotangents(outputs) if callable(cotangents) else cotangents
    return [convert(c, y.dtype) for c, y in zip(given, outputs, strict=True)]


def _zeros_for_missing(grads, like):
    return [
        np.zeros(tuple(s.shape), dtype=np.float32) if g is None else _numpy(g)
        for g, s in zip(grads, like, strict=True)
    ]


def tf_variable(variable):
    """The tf.Variable behind a weight (Keras 3 on TensorFlow wraps one; tf.keras 2's is one)."""
    import tensorflow as tf

    return variable if isinstance(variable, tf.Variable) else variable.value


def _vjp_tensorflow(layer, x, cotangents, variables, mode):
    import tensorflow as tf

    watched = [tf_variable(v) for v in variables]

    def pull(x, cots):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(x)
            tape.watch(watched)
            outputs = as_tuple(layer(x))
        grads = tape.gradient(list(outputs), [x, *watched], output_gradients=list(cots))
        return outputs, grads

    x = tf.constant(x)
    if mode == "eager":
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(x)
            tape.watch(watched)
            outputs = as_tuple(layer(x))
        cots = _cotangents(cotangents, outputs, tf.constant)
        grads = tape.gradient(list(outputs), [x, *watched], output_gradients=cots)
    else:
        if callable(cotangents):
            cots = _cotangents(cotangents, forward(layer, x.numpy(), mode), tf.constant)
        else:
            cots = [tf.constant(c) for c in cotangents]
        run = _compiled(
            layer,
            ("vjp", mode, tuple(id(v) for v in variables)),
            lambda: tf.function(pull, jit_compile=mode == "xla", reduce_retracing=True),
        )
        outputs, grads = run(x, cots)
    grads = _zeros_for_missing(grads, [x, *watched])
    return tuple(_numpy(y) for y in outputs), grads[0], grads[1:]


def _vjp_jax(layer, x, cotangents, variables, mode):
    import jax
    import jax.numpy as jnp

    _bound_jax_programs(layer, "vjp", np.shape(x))
    trainable = list(layer.trainable_variables)
    index = {id(v): i for i, v in enumerate(trainable)}
    missing = [v for v in variables if id(v) not in index]
    if missing:
        raise ValueError(
            "gradients are taken w.r.t. trainable weights only on JAX; not trainable: "
            + ", ".join(v.path for v in missing)
        )
    trainable_values, non_trainable_values = _values(layer)

    def function(x, trainable_values, non_trainable_values):
        outputs, _ = stateless_call(layer, trainable_values, non_trainable_values, x)
        return as_tuple(outputs)

    def pull(x, trainable_values, non_trainable_values, cots):
        # Every value an argument: a compiled function must not keep the weights (BatchNorm
        # statistics included) it first saw.
        outputs, pullback = jax.vjp(
            lambda x, t: function(x, t, non_trainable_values), x, trainable_values
        )
        return outputs, pullback(cots)

    x = jnp.asarray(x)
    if mode == "jit":
        run = _compiled(layer, ("vjp", mode), lambda: jax.jit(pull))
        if callable(cotangents):
            # The cotangents need the outputs' shapes only: traced, not compiled (a compile
            # per new input shape is most of an example's time on JAX).
            shapes = jax.eval_shape(function, x, trainable_values, non_trainable_values)
            cots = tuple(_cotangents(cotangents, shapes, jnp.asarray))
        else:
            cots = tuple(jnp.asarray(c) for c in cotangents)
    else:
        run = pull
        outputs = function(x, trainable_values, non_trainable_values)
        cots = tuple(_cotangents(cotangents, outputs, jnp.asarray))
    outputs, (grad_x, grad_trainable) = run(x, trainable_values, non_trainable_values, cots)
    grads = [_numpy(grad_trainable[index[id(v)]]) for v in variables]
    return tuple(_numpy(y) for y in outputs), _numpy(grad_x), grads


def _vjp_torch(layer, x, cotangents, variables):
    import torch

    # On Keras' device (a GPU where there is one), where the layer's weights are.
    x = keras.ops.convert_to_tensor(x).detach().requires_grad_(True)
    outputs = as_tuple(layer(x))
    numpy_outputs = tuple(_numpy(y) for y in outputs)  # bfloat16 too (ml_dtypes)
    given = cotangents(numpy_outputs) if callable(cotangents) else cotangents
    cots = [
        torch.as_tensor(c, dtype=y.dtype, device=y.device)
        for c, y in zip(given, outputs, strict=True)
    ]
    tensors = [x, *(v.value for v in variables)]
    grads = torch.autograd.grad(outputs, tensors, cots, allow_unused=True)
    grads = _zeros_for_missing(grads, tensors)
    return numpy_outputs, grads[0], grads[1:]


# -- one training step ---------------------------------------------------------------------------


def train_step(layer, x: np.ndarray, loss_of, variables: Sequence, optimizer):
    """One step in training mode: outputs, loss, gradients of ``loss_of(outputs)`` w.r.t.
    ``variables`` applied by the Keras ``optimizer``. Non-trainable state (BatchNorm's
    moving statistics) is updated as the layer updates it. Returns (outputs, loss). On JAX
    the loss and its gradients are compiled (``jax.jit``) in every mode: eager JAX compiles
    each operation of each new shape (3 head SGD steps: 25 s compiled, 41 s eager)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            outputs = as_tuple(layer(x, training=True))
            loss = loss_of(outputs)
        grads = tape.gradient(loss, [v.value for v in variables])
    elif backend == "torch":
        import torch

        outputs = as_tuple(layer(keras.ops.convert_to_tensor(x), training=True))
        loss = loss_of(outputs)
        grads = torch.autograd.grad(loss, [v.value for v in variables], allow_unused=True)
    elif backend == "jax":
        import jax

        # A fresh function each step: a program of its own whatever the shape.
        _bound_jax_programs(layer, "train", (np.shape(x), next(_train_steps)))
        trainable = list(layer.trainable_variables)
        index = {id(v): i for i, v in enumerate(trainable)}
        trainable_values, non_trainable_values = _values(layer)

        def function(trainable_values):
            outputs, updated = stateless_call(
                layer, trainable_values, non_trainable_values, x, training=True
            )
            outputs = as_tuple(outputs)
            return loss_of(outputs), (outputs, updated)

        # Compiled: eager JAX compiles every operation of every new shape on its own.
        step = jax.jit(jax.value_and_grad(function, has_aux=True))
        (loss, (outputs, updated)), grad_trainable = step(trainable_values)
        for variable, value in zip(layer.non_trainable_variables, updated, strict=True):
            variable.assign(value)
        grads = [grad_trainable[index[id(v)]] for v in variables]
    else:
        raise NotImplementedError(f"training steps on the {backend!r} backend")
    grads = [
        keras.ops.zeros(v.shape, v.dtype) if g is None else g
        for g, v in zip(grads, variables, strict=True)
    ]
    optimizer.apply_gradients(zip(grads, variables, strict=True))
    return tuple(_numpy(y) for y in outputs), float(_numpy(loss))
