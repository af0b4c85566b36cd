"""The DANet head: reference structure, the Keras layer, BatchNorm semantics, the converter."""

import keras
import numpy as np
import pytest
import torch
from keras.ops import convert_to_numpy as to_numpy

from impl_keras import DANetHead, TorchBatchNormalization
from parity.backends.weights import export_state_dict, load_state_dict
from parity.core.layout import nchw_to_nhwc, nhwc_to_nchw
from parity.core.spec import random_parameters
from reference_torch import DANetHead as TorchHead

CONV_NORM_PARTS = (
    "0.weight",
    "1.weight",
    "1.bias",
    "1.running_mean",
    "1.running_var",
    "1.num_batches_tracked",
)
ORIGINAL_KEYS = (
    [f"{block}.{part}" for block in ("conv5a", "conv5c") for part in CONV_NORM_PARTS]
    + [
        "sa.gamma",
        "sa.query_conv.weight",
        "sa.query_conv.bias",
        "sa.key_conv.weight",
        "sa.key_conv.bias",
        "sa.value_conv.weight",
        "sa.value_conv.bias",
        "sc.gamma",
    ]
    + [f"{block}.{part}" for block in ("conv51", "conv52") for part in CONV_NORM_PARTS]
    + [f"conv{i}.1.{p}" for i in (6, 7, 8) for p in ("weight", "bias")]
)


def built(in_channels=64, out_channels=5, **kwargs):
    layer = DANetHead(out_channels, **kwargs)
    channels_first = kwargs.get("data_format") == "channels_first"
    layer.build(
        (None, in_channels, None, None) if channels_first else (None, None, None, in_channels)
    )
    return layer


def random_torch_head(in_channels=64, out_channels=5, seed=0):
    head = TorchHead(in_channels, out_channels)
    state = random_parameters(head, np.random.default_rng(seed))
    head.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    return head.eval()


def test_reference_keeps_the_original_keys_and_shapes():
    head = TorchHead(64, 19)
    assert list(head.state_dict()) == ORIGINAL_KEYS
    assert head.conv5a[0].weight.shape == (16, 64, 3, 3) and head.conv5a[0].bias is None
    assert head.conv6[1].weight.shape == (19, 16, 1, 1)
    assert head.conv5a[1].eps == 1e-5 and head.conv5a[1].momentum == 0.1
    outputs = head.eval()(torch.randn(2, 64, 5, 7))
    assert [tuple(y.shape) for y in outputs] == [(2, 19, 5, 7)] * 3


def test_reference_refuses_too_few_channels():
    with pytest.raises(ValueError, match=r"in_channels >= 32.*in_channels=28"):
        TorchHead(28, 5)


def test_keras_head_converts_every_key_both_ways():
    head = random_torch_head()
    layer = built()
    load_state_dict(layer, head.state_dict(), ignore=["*num_batches_tracked"])
    exported = export_state_dict(layer)
    expected = {k: v for k, v in head.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert exported.keys() == expected.keys()
    for key, value in expected.items():
        np.testing.assert_array_equal(exported[key], value.numpy(), err_msg=key)


def test_a_full_danet_checkpoint_loads_under_its_prefix():
    state = {f"head.{k}": v for k, v in random_torch_head().state_dict().items()}
    state["pretrained.layer4.0.conv1.weight"] = torch.zeros(2)
    layer = built()
    load_state_dict(layer, state, prefix="head.", ignore=["*num_batches_tracked"])
    np.testing.assert_array_equal(
        to_numpy(layer.conv5a.norm.moving_variance), state["head.conv5a.1.running_var"].numpy()
    )


def test_num_batches_tracked_is_refused_unless_ignored():
    from parity.core.errors import StateDictMismatchError

    with pytest.raises(
        StateDictMismatchError, match=r"unexpected key 'conv5a.1.num_batches_tracked'"
    ):
        load_state_dict(built(), random_torch_head().state_dict())


def test_batchnorm_matches_pytorch_in_training_mode():
    """Batch statistics, PyTorch's momentum, and the unbiased running variance."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4, 5, 6)).astype("float32")  # NCHW
    torch_norm = torch.nn.BatchNorm2d(4).train()
    keras_norm = TorchBatchNormalization()
    keras_norm.build((None, None, None, 4))
    for name in ("running_mean", "running_var"):
        getattr(torch_norm, name).copy_(torch.from_numpy(rng.uniform(0.5, 2, 4).astype("float32")))
    # Copies: on JAX an assigned NumPy array may share memory with the torch buffer that the
    # torch forward pass below updates in place.
    keras_norm.moving_mean.assign(torch_norm.running_mean.numpy().copy())
    keras_norm.moving_variance.assign(torch_norm.running_var.numpy().copy())
    expected = torch_norm(torch.from_numpy(x)).detach().numpy()
    got = nhwc_to_nchw(to_numpy(keras_norm(nchw_to_nhwc(x), training=True)))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(to_numpy(keras_norm.moving_mean), torch_norm.running_mean, rtol=1e-6)
    np.testing.assert_allclose(
        to_numpy(keras_norm.moving_variance), torch_norm.running_var, rtol=1e-6
    )
    assert keras_norm.epsilon == torch_norm.eps and keras_norm.momentum == 1 - torch_norm.momentum


def test_head_in_float64_matches_the_reference_to_float64_precision():
    head = random_torch_head().double()
    layer = built(dtype="float64")
    load_state_dict(layer, head.state_dict(), ignore=["*num_batches_tracked"])
    x = np.random.default_rng(1).standard_normal((2, 64, 5, 7))
    expected = head(torch.from_numpy(x))
    got = layer(nchw_to_nhwc(x))
    for y_torch, y_keras in zip(expected, got, strict=True):
        np.testing.assert_allclose(
            nhwc_to_nchw(to_numpy(y_keras)), y_torch.detach().numpy(), rtol=1e-10, atol=1e-10
        )


def test_channels_first_equals_channels_last():
    last = built()
    first = built(data_format="channels_first")
    load_state_dict(last, random_torch_head().state_dict(), ignore=["*num_batches_tracked"])
    first.set_weights(last.get_weights())
    x = np.random.default_rng(2).standard_normal((2, 6, 3, 64)).astype("float32")
    for a, b in zip(last(x), first(nhwc_to_nchw(x)), strict=True):
        np.testing.assert_allclose(nhwc_to_nchw(to_numpy(a)), to_numpy(b), rtol=1e-5, atol=1e-5)


def test_model_serves_any_shape_and_saves(tmp_path):
    inputs = keras.Input(shape=(None, None, 64))
    model = keras.Model(inputs, DANetHead(5)(inputs))
    load_state_dict(
        model.layers[1], random_torch_head().state_dict(), ignore=["*num_batches_tracked"]
    )
    model.save(tmp_path / "head.keras")
    reloaded = keras.saving.load_model(tmp_path / "head.keras")
    for shape in [(1, 1, 1, 64), (2, 5, 3, 64)]:
        x = np.random.default_rng(3).standard_normal(shape).astype("float32")
        for a, b in zip(model(x), reloaded(x), strict=True):
            assert a.shape == (*shape[:3], 5)
            np.testing.assert_array_equal(to_numpy(a), to_numpy(b))


def test_bad_input_is_refused_with_the_shape():
    with pytest.raises(ValueError, match=r"at least 32 input channels.*\(None, None, None, 24\)"):
        DANetHead(5).build((None, None, None, 24))
    with pytest.raises(ValueError, match=r"out_channels >= 1.*out_channels=0"):
        DANetHead(0)
    layer = built()
    with pytest.raises(ValueError, match=r"expected axis -1 of input shape to have value 64"):
        layer(np.zeros((1, 2, 2, 48), "float32"))
