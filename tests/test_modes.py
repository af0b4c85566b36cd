"""Every way Keras runs the port gives the reference's outputs and gradients: eager,
``tf.function`` and XLA on TensorFlow, eager and ``jax.jit`` on JAX, eager on PyTorch."""

from functools import cache

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from keras.ops import convert_to_numpy as to_numpy

import parity.core.strategies as pst
from impl_keras import ChannelAttention, DANetHead, PositionAttention
from parity.backends.protocol import as_tuple, port_framework
from parity.core import registry
from parity.core.strategies import Example
from parity.pairs.pam import chunked
from parity.run.assertions import assert_report
from parity.run.engine import Checker

CAM = registry.pair("cam")
HEAD = registry.pair("head")
PAM = registry.pair("pam")

MODES = port_framework().modes

# A few shapes, odd ones included: a compiled mode retraces (XLA recompiles) per shape, so
# the examples spend their time on scales, weights and modes rather than on compiling.
SHAPES = {
    "pam": [(2, 16, 3, 5), (1, 9, 1, 7), (3, 24, 6, 4)],
    "pam-chunked": [(2, 16, 3, 5), (3, 24, 6, 4)],  # blocks of 7: 7+7+1, 7+7+7+3
    "cam": [(2, 16, 3, 5), (1, 3, 7, 1), (4, 13, 2, 9)],
    "head": [(2, 32, 3, 5), (1, 44, 4, 1)],
}


def few_shapes(pair):
    return st.builds(
        lambda shape, scale, seed: Example(*shape, scale, seed),
        st.sampled_from(SHAPES[pair.name]),
        pst.input_scales(max_scale=3.0),
        pst.seeds(),
    )


@cache
def checker(pair, mode):
    return Checker(pair, mode=mode)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("pair", [PAM, chunked(), CAM, HEAD], ids=lambda p: p.name)
@given(data=st.data())
@settings(max_examples=max(5, settings().max_examples // 5))
def test_every_execution_mode_matches_the_reference(pair, mode, data):
    example = data.draw(few_shapes(pair), label="example")
    assert_report(checker(pair, mode).check(example), pair)


@pytest.mark.parametrize(
    "make", [PositionAttention, ChannelAttention, lambda: DANetHead(5)], ids=["pam", "cam", "head"]
)
def test_compiled_model_serves_several_shapes_like_eager(make):
    """A model on (None, None, None, C) inputs, compiled (XLA where the backend has it),
    serves several shapes without retracing errors and agrees with the eager layer."""
    inputs = keras.Input(shape=(None, None, 32))
    layer = make()
    model = keras.Model(inputs, layer(inputs))
    for weight in layer.weights:
        weight.assign(np.random.default_rng(0).uniform(-0.3, 0.3, weight.shape))
    model.compile(jit_compile=keras.backend.backend() != "torch")
    for shape in [(1, 3, 5, 32), (3, 6, 2, 32), (2, 1, 1, 32), (3, 6, 2, 32)]:
        x = np.random.default_rng(1).standard_normal(shape).astype("float32")
        compiled = as_tuple(model.predict(x, verbose=0))
        eager = as_tuple(layer(x))
        for a, b in zip(compiled, eager, strict=True):
            np.testing.assert_allclose(to_numpy(a), to_numpy(b), rtol=1e-4, atol=1e-5)
