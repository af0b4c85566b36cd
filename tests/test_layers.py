"""The Keras layers behave as Keras layers should: weights, config, saving, shapes, errors."""

import keras
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from keras.ops import convert_to_numpy as to_numpy

from impl_keras import ChannelAttention, DANetHead, PositionAttention
from impl_keras.attention import _PointwiseConv
from parity.backends.protocol import as_tuple
from parity.backends.weights import load_state_dict
from parity.core.layout import nchw_to_nhwc, nhwc_to_nchw
from reference_torch import CAM_Module, PAM_Module

LAYERS = [PositionAttention, ChannelAttention]


def built(layer_class, channels=16, **kwargs):
    layer = layer_class(**kwargs)
    shape = (
        (None, channels, None, None)
        if kwargs.get("data_format") == "channels_first"
        else (None, None, None, channels)
    )
    layer.build(shape)
    return layer


def randomized(layer, seed=0):
    rng = np.random.default_rng(seed)
    for weight in layer.weights:
        weight.assign(rng.uniform(-0.5, 0.5, size=weight.shape).astype(weight.dtype))
    return layer


def test_position_attention_tracks_its_weights():
    layer = built(PositionAttention, 24)
    shapes = {w.path.split("/", 1)[1]: tuple(w.shape) for w in layer.trainable_weights}
    assert shapes == {
        "gamma": (),
        "query_conv/kernel": (1, 1, 24, 3),
        "query_conv/bias": (3,),
        "key_conv/kernel": (1, 1, 24, 3),
        "key_conv/bias": (3,),
        "value_conv/kernel": (1, 1, 24, 24),
        "value_conv/bias": (24,),
    }
    assert [w.path.split("/", 1)[1] for w in built(ChannelAttention).trainable_weights] == ["gamma"]


@pytest.mark.parametrize("layer_class", LAYERS)
def test_gamma_starts_at_zero_so_the_layer_starts_as_the_identity(layer_class):
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 16)).astype("float32")
    np.testing.assert_array_equal(to_numpy(layer_class()(x)), x)


@pytest.mark.parametrize("layer_class", LAYERS)
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_config_round_trip_keeps_outputs(layer_class, data_format):
    layer = randomized(built(layer_class, data_format=data_format, name="attention"))
    clone = layer_class.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    clone.build(
        (None, 16, None, None) if data_format == "channels_first" else (None, None, None, 16)
    )
    clone.set_weights(layer.get_weights())
    x = (
        np.random.default_rng(1)
        .standard_normal((2, 16, 3, 5) if data_format == "channels_first" else (2, 3, 5, 16))
        .astype("float32")
    )
    np.testing.assert_array_equal(to_numpy(clone(x)), to_numpy(layer(x)))


@pytest.mark.parametrize("layer_class", LAYERS)
def test_saved_model_reloads_with_the_same_outputs(layer_class, tmp_path):
    inputs = keras.Input(shape=(None, None, 16))
    model = keras.Model(inputs, layer_class()(inputs))
    randomized(model.layers[1])
    model.save(tmp_path / "model.keras")
    reloaded = keras.saving.load_model(tmp_path / "model.keras")
    assert type(reloaded.layers[1]) is layer_class
    x = np.random.default_rng(2).standard_normal((2, 3, 7, 16)).astype("float32")
    np.testing.assert_array_equal(to_numpy(reloaded(x)), to_numpy(model(x)))


@pytest.mark.parametrize("layer_class", LAYERS)
def test_one_model_serves_any_batch_height_and_width(layer_class):
    inputs = keras.Input(shape=(None, None, 16))
    layer = layer_class()
    model = keras.Model(inputs, layer(inputs))
    randomized(layer)
    for shape in [(1, 1, 1, 16), (3, 5, 2, 16), (2, 9, 13, 16)]:
        x = np.random.default_rng(3).standard_normal(shape).astype("float32")
        y = to_numpy(model.predict(x, verbose=0))
        assert y.shape == shape
        np.testing.assert_allclose(y, to_numpy(layer(x)), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("layer_class", LAYERS)
@given(height=st.integers(1, 6), width=st.integers(1, 6), channels=st.integers(8, 20))
def test_channels_first_equals_channels_last(layer_class, height, width, channels):
    last = randomized(built(layer_class, channels))
    first = built(layer_class, channels, data_format="channels_first")
    first.set_weights(last.get_weights())
    x = np.random.default_rng(4).standard_normal((2, height, width, channels)).astype("float32")
    np.testing.assert_allclose(
        nhwc_to_nchw(to_numpy(last(x))), to_numpy(first(nhwc_to_nchw(x))), rtol=1e-5, atol=1e-5
    )


def test_channels_first_bias_lands_on_channels_when_width_equals_filters():
    """Regression for a Keras 3.15 TF-backend bug (see _PointwiseConv): W == filters == 2."""
    x = np.random.default_rng(5).standard_normal((1, 16, 1, 2)).astype("float32")
    conv = _PointwiseConv(2, kernel_size=1, data_format="channels_first", bias_initializer="ones")
    conv.build(x.shape)
    conv.bias.assign(np.array([1.0, -1.0], "float32"))
    kernel = to_numpy(conv.kernel)[0, 0]
    expected = np.einsum("bihw,io->bohw", x, kernel) + np.array([1.0, -1.0])[None, :, None, None]
    np.testing.assert_allclose(to_numpy(conv(x)), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("layer", "reference"), [(PositionAttention, PAM_Module), (ChannelAttention, CAM_Module)]
)
def test_layer_in_float64_matches_the_reference_to_float64_precision(layer, reference):
    """Semantics apart from float32 noise: the same weights, both in float64."""
    torch.manual_seed(0)
    module = reference(16).double()
    torch.nn.init.uniform_(module.gamma, 0.5, 1.5)
    port = built(layer, 16, dtype="float64")
    load_state_dict(port, module)
    x = np.random.default_rng(6).standard_normal((3, 16, 4, 7))
    expected = module(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(
        nhwc_to_nchw(to_numpy(port(nchw_to_nhwc(x)))), expected, rtol=1e-11, atol=1e-11
    )


# -- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize("layer_class", LAYERS)
def test_wrong_rank_is_refused_with_the_shape(layer_class):
    with pytest.raises(ValueError, match=r"expected ndim=4, found ndim=3"):
        layer_class()(np.zeros((2, 5, 16), "float32"))


@pytest.mark.parametrize("layer_class", LAYERS)
def test_other_channel_count_than_built_is_refused(layer_class):
    layer = layer_class()
    layer(np.zeros((1, 2, 2, 16), "float32"))
    with pytest.raises(
        ValueError, match=r"axis -1 of input shape to have value 16.*\(1, 2, 2, 17\)"
    ):
        layer(np.zeros((1, 2, 2, 17), "float32"))


def test_position_attention_refuses_fewer_than_eight_channels():
    with pytest.raises(ValueError, match=r"at least 8 input channels.*with 5 channels"):
        PositionAttention()(np.zeros((1, 2, 2, 5), "float32"))


@pytest.mark.parametrize("layer_class", LAYERS)
def test_unknown_channel_count_is_refused(layer_class):
    with pytest.raises(ValueError, match=r"known channel dimension"):
        layer_class().build((None, None, None, None))


@pytest.mark.parametrize("layer_class", LAYERS)
def test_unknown_data_format_is_refused(layer_class):
    with pytest.raises(ValueError, match=r"Expected one of .*Received: data_format='NHWC'"):
        layer_class(data_format="NHWC")


@pytest.mark.parametrize(
    "make",
    [PositionAttention, ChannelAttention, lambda: DANetHead(5)],
    ids=["pam", "cam", "head"],
)
def test_weights_file_round_trip_keeps_outputs(make, tmp_path):
    def model():
        inputs = keras.Input(shape=(None, None, 32))
        layer = make()
        return keras.Model(inputs, layer(inputs)), layer

    saved, layer = model()
    randomized(layer, seed=3)
    saved.save_weights(tmp_path / "m.weights.h5")
    loaded, _ = model()
    loaded.load_weights(tmp_path / "m.weights.h5")
    x = np.random.default_rng(4).standard_normal((2, 5, 3, 32)).astype("float32")
    for a, b in zip(as_tuple(saved(x)), as_tuple(loaded(x)), strict=True):
        np.testing.assert_array_equal(to_numpy(a), to_numpy(b))
