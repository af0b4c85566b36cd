"""Each known trap predicts what Keras computes when the trap is sprung: the prediction (from
``parity.backends.torch.traps``, in PyTorch) against the trapped Keras layer itself, and against the
faithful PyTorch layer, which it must not match (else it could name nothing)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import torch

from parity.backends.torch.traps import traps_for
from parity.core.layout import nchw_to_nhwc, nhwc_to_nchw

RNG = np.random.default_rng(0)


def _trap(module, name, cause_part=""):
    (trap,) = [t for t in traps_for(module) if t.name == name and cause_part in t.cause]
    return trap


def _keras(layer, x_nchw):
    return nhwc_to_nchw(keras.ops.convert_to_numpy(layer(nchw_to_nhwc(x_nchw))))


def _conv(in_channels=3, out_channels=5, kernel=3, stride=1, padding=1, dilation=1):
    torch.manual_seed(0)
    return torch.nn.Conv2d(
        in_channels, out_channels, kernel, stride, padding, dilation, dtype=torch.float64
    )


def _keras_conv(conv, kernel, **options):
    layer = keras.layers.Conv2D(conv.out_channels, conv.kernel_size, dtype="float64", **options)
    layer.build((None, None, None, conv.in_channels))
    layer.set_weights([kernel, conv.bias.detach().numpy()])
    return layer


def _transposed(conv):
    return conv.weight.detach().numpy().transpose(2, 3, 1, 0)


def _check(trap, module, keras_output, x):
    with torch.no_grad():
        predicted = trap.predict(module, torch.from_numpy(x)).numpy()
        faithful = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(predicted, keras_output, rtol=1e-10, atol=1e-12)
    assert np.max(np.abs(faithful - keras_output)) > 1e-3  # the trap changes the result


def test_strided_same_padding_is_what_keras_computes():
    conv = _conv(stride=2)
    x = RNG.standard_normal((2, 3, 8, 6))  # even sides: TensorFlow pads bottom/right only
    keras_output = _keras(_keras_conv(conv, _transposed(conv), strides=2, padding="same"), x)
    _check(_trap(conv, "strided 'same' padding"), conv, keras_output, x)


def test_dilation_on_the_wrong_block_is_what_keras_computes():
    conv = _conv(padding=4, dilation=4)
    x = RNG.standard_normal((2, 3, 9, 7))
    layer = _keras_conv(conv, _transposed(conv), dilation_rate=2, padding="same")
    _check(_trap(conv, "dilation on the wrong block", "dilation 2"), conv, _keras(layer, x), x)


def test_a_reshaped_kernel_is_what_keras_computes():
    conv = _conv(padding=1)
    x = RNG.standard_normal((2, 3, 5, 4))
    kernel = conv.weight.detach().numpy().reshape(3, 3, 3, 5)
    layer = _keras_conv(conv, kernel, padding="same")
    _check(_trap(conv, "kernel reshaped"), conv, _keras(layer, x), x)


def test_batchnorm_at_keras_epsilon_is_what_keras_computes():
    norm = torch.nn.BatchNorm2d(4, dtype=torch.float64).eval()
    norm.running_var.uniform_(0.001, 0.01)  # small variances: where epsilon shows
    norm.running_mean.uniform_(-0.5, 0.5)
    layer = keras.layers.BatchNormalization(dtype="float64")  # epsilon 1e-3
    layer.build((None, None, None, 4))
    layer.set_weights(
        [p.detach().numpy() for p in (norm.weight, norm.bias)]
        + [b.numpy() for b in (norm.running_mean, norm.running_var)]
    )
    x = RNG.standard_normal((2, 4, 3, 5)) * 0.05
    _check(_trap(norm, "BatchNorm epsilon"), norm, _keras(layer, x), x)


@pytest.mark.parametrize("side", [8, 7])
def test_max_pool_same_padding_is_what_keras_computes(side):
    pool = torch.nn.MaxPool2d(3, 2, 1)
    x = RNG.standard_normal((2, 3, side, side)) - 3.0  # negative: zero padding would show too
    layer = keras.layers.MaxPooling2D(3, 2, padding="same", dtype="float64")
    keras_output = _keras(layer, x)
    trap = _trap(pool, "max-pool padding")
    with torch.no_grad():
        predicted = trap.predict(pool, torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(predicted, keras_output, rtol=1e-10, atol=1e-12)
    # Keras "same" matches PyTorch exactly on odd sides only.
    with torch.no_grad():
        faithful = pool(torch.from_numpy(x)).numpy()
    assert (np.max(np.abs(faithful - keras_output)) > 1e-3) == (side % 2 == 0)


def test_no_trap_is_offered_where_it_cannot_apply():
    names = {t.name for t in traps_for(_conv(kernel=1, padding=0))}
    assert names == {"kernel reshaped"}  # no padding or dilation to get wrong on a 1x1
    assert not list(traps_for(torch.nn.ReLU()))
