"""The converter: exact layouts, strict errors, and a round trip that is the identity."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from keras.ops import convert_to_numpy as to_numpy

from impl_keras import ChannelAttention, PositionAttention
from parity.backends.weights import export_state_dict, load_state_dict
from parity.core import layout
from parity.core.errors import StateDictMismatchError
from reference_torch import CAM_Module, PAM_Module


def built(layer_class, channels, data_format="channels_last"):
    layer = layer_class(data_format=data_format)
    layer.build(
        (None, channels, None, None)
        if data_format == "channels_first"
        else (None, None, None, channels)
    )
    return layer


def random_state(module, seed):
    rng = np.random.default_rng(seed)
    return {
        k: rng.standard_normal(tuple(v.shape)).astype("float32")
        for k, v in module.state_dict().items()
    }


def test_conv_kernel_moves_every_element_to_its_hwio_place():
    oihw = np.arange(5 * 4 * 3 * 2, dtype="float32").reshape(5, 4, 3, 2)
    hwio = layout.CONV_KERNEL.to_keras(oihw)
    assert hwio.shape == (3, 2, 4, 5)
    for o, i, h, w in np.ndindex(oihw.shape):
        assert hwio[h, w, i, o] == oihw[o, i, h, w]
    np.testing.assert_array_equal(layout.CONV_KERNEL.to_torch(hwio), oihw)


def test_activations_move_between_nchw_and_nhwc():
    nchw = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
    nhwc = layout.nchw_to_nhwc(nchw)
    assert nhwc[1, 2, 3, 0] == nchw[1, 0, 2, 3]
    np.testing.assert_array_equal(layout.nhwc_to_nchw(nhwc), nchw)
    np.testing.assert_array_equal(layout.to_data_format(nchw, "channels_first"), nchw)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize(
    ("layer_class", "module_class"),
    [(PositionAttention, PAM_Module), (ChannelAttention, CAM_Module)],
)
@given(channels=st.integers(8, 40), seed=st.integers(0, 2**32 - 1))
def test_round_trip_is_the_identity(layer_class, module_class, data_format, channels, seed):
    state = random_state(module_class(channels), seed)
    layer = built(layer_class, channels, data_format)
    load_state_dict(layer, state)
    exported = export_state_dict(layer)
    assert exported.keys() == state.keys()
    for key, value in state.items():
        assert exported[key].shape == value.shape, key
        np.testing.assert_array_equal(exported[key], value, err_msg=key)


def test_loads_from_a_module_and_from_tensors():
    module = PAM_Module(16)
    layer = built(PositionAttention, 16)
    load_state_dict(layer, module)
    np.testing.assert_array_equal(
        to_numpy(layer.value_conv.kernel)[0, 0],
        module.value_conv.weight.detach().numpy()[:, :, 0, 0].T,
    )
    load_state_dict(layer, {k: torch.zeros_like(v) for k, v in module.state_dict().items()})
    assert not np.any(to_numpy(layer.value_conv.kernel))


def test_keys_under_a_prefix_load_and_others_are_left_alone():
    state = {f"head.sa.{k}": v for k, v in random_state(PAM_Module(16), 0).items()}
    state["head.conv5a.0.weight"] = np.zeros((4, 64, 3, 3), "float32")
    layer = built(PositionAttention, 16)
    load_state_dict(layer, state, prefix="head.sa.")
    np.testing.assert_array_equal(
        export_state_dict(layer, prefix="head.sa.")["head.sa.gamma"], state["head.sa.gamma"]
    )


def unchanged_after(layer, action):
    before = [to_numpy(w).copy() for w in layer.weights]
    action()
    for old, weight in zip(before, layer.weights, strict=True):
        np.testing.assert_array_equal(old, to_numpy(weight))


def test_missing_key_is_named_and_nothing_is_written():
    state = random_state(PAM_Module(16), 0)
    del state["key_conv.bias"]
    layer = built(PositionAttention, 16)

    def load():
        with pytest.raises(
            StateDictMismatchError, match=r"missing key 'key_conv.bias'.*shape \(2,\)"
        ):
            load_state_dict(layer, state)

    unchanged_after(layer, load)


def test_unexpected_key_is_named():
    state = random_state(CAM_Module(16), 0)
    state["beta"] = np.zeros(1, "float32")
    with pytest.raises(StateDictMismatchError, match=r"unexpected key 'beta' of shape \(1,\)"):
        load_state_dict(built(ChannelAttention, 16), state)


def test_unexpected_key_can_be_ignored_by_name():
    state = random_state(CAM_Module(16), 0)
    state["num_batches_tracked"] = np.zeros((), "int64")
    load_state_dict(built(ChannelAttention, 16), state, ignore=["num_batches_tracked"])


def test_kernel_in_keras_layout_is_refused_not_reshaped():
    """An HWIO kernel handed over as if it were OIHW: name, both shapes, the layout."""
    state = random_state(PAM_Module(16), 0)
    state["query_conv.weight"] = np.zeros((1, 1, 16, 2), "float32")
    layer = built(PositionAttention, 16)

    def load():
        with pytest.raises(StateDictMismatchError) as failure:
            load_state_dict(layer, state)
        message = str(failure.value)
        assert "'query_conv.weight': shape (1, 1, 16, 2)" in message
        assert "/query_conv/kernel' of shape (1, 1, 16, 2): expected (2, 16, 1, 1)" in message
        assert "PyTorch OIHW (out, in, kH, kW) -> Keras HWIO (kH, kW, in, out)" in message

    unchanged_after(layer, load)


def test_state_dict_for_other_channel_count_is_refused():
    with pytest.raises(
        StateDictMismatchError, match=r"'value_conv.weight': shape \(24, 24, 1, 1\)"
    ):
        load_state_dict(built(PositionAttention, 16), random_state(PAM_Module(24), 0))


def test_gamma_must_have_one_element():
    state = random_state(CAM_Module(16), 0)
    state["gamma"] = np.zeros(2, "float32")
    with pytest.raises(
        StateDictMismatchError,
        match=r"'gamma': shape \(2,\).*expected \(1,\) \(layout PyTorch \(1,\) -> Keras \(\)\)",
    ):
        load_state_dict(built(ChannelAttention, 16), state)


def test_unbuilt_layer_is_refused_with_what_to_do():
    with pytest.raises(ValueError, match=r"not built.*layer.build\(input_shape\)"):
        load_state_dict(PositionAttention(), PAM_Module(16))


def test_unknown_layer_is_refused():
    import keras

    dense = keras.layers.Dense(3)
    dense.build((None, 2))
    with pytest.raises(TypeError, match=r"No weight bindings are registered for Dense"):
        load_state_dict(dense, {})


def test_not_a_state_dict_is_refused():
    with pytest.raises(TypeError, match=r"Received: list"):
        load_state_dict(built(ChannelAttention, 8), [1, 2])
