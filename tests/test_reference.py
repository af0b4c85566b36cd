"""The PyTorch reference reproduces the original modules: names, errors and math."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from reference_torch import CAM_Module, PAM_Module

PAM_KEYS = [
    "gamma",
    "query_conv.weight",
    "query_conv.bias",
    "key_conv.weight",
    "key_conv.bias",
    "value_conv.weight",
    "value_conv.bias",
]


def softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def pam_numpy(x, state):
    """PAM written from the paper's equations, position by position (N = h * W + w)."""
    b, c, h, w = x.shape
    flat = x.reshape(b, c, h * w)

    def conv(name):
        weight = state[f"{name}.weight"][:, :, 0, 0]
        return np.einsum("oc,bcn->bon", weight, flat) + state[f"{name}.bias"][None, :, None]

    query, key, value = conv("query_conv"), conv("key_conv"), conv("value_conv")
    attention = softmax(np.einsum("bci,bcj->bij", query, key))  # s_ji in the paper
    out = np.einsum("bcj,bij->bci", value, attention)
    return state["gamma"][0] * out.reshape(x.shape) + x


def cam_numpy(x, gamma):
    b, c, h, w = x.shape
    flat = x.reshape(b, c, h * w)
    energy = np.einsum("bin,bjn->bij", flat, flat)
    attention = softmax(-energy)  # the original's rowmax - energy is the same softmax
    return gamma * np.einsum("bij,bjn->bin", attention, flat).reshape(x.shape) + x


def test_state_dict_keys_are_the_originals():
    assert sorted(PAM_Module(16).state_dict()) == sorted(PAM_KEYS)
    assert list(CAM_Module(16).state_dict()) == ["gamma"]
    assert PAM_Module(20).query_conv.weight.shape == (2, 20, 1, 1)
    assert PAM_Module(20).value_conv.weight.shape == (20, 20, 1, 1)


def test_original_checkpoint_loads_from_disk(tmp_path):
    original = PAM_Module(16)
    torch.nn.init.normal_(original.gamma)
    torch.save(original.state_dict(), tmp_path / "pam.pth")
    restored = PAM_Module(16)
    restored.load_state_dict(torch.load(tmp_path / "pam.pth", weights_only=True), strict=True)
    assert torch.equal(restored.gamma, original.gamma)


def test_pam_refuses_fewer_than_eight_channels():
    with pytest.raises(ValueError, match=r"in_dim >= 8.*in_dim=7"):
        PAM_Module(7)


@pytest.mark.parametrize("module", [PAM_Module(8), CAM_Module(8)], ids=["pam", "cam"])
def test_non_4d_input_is_refused(module):
    with pytest.raises(ValueError, match=r"4D input \(batch, C, H, W\).*x.shape=\(8, 3, 3\)"):
        module(torch.zeros(8, 3, 3))


def test_pytorch_init_makes_the_block_the_identity():
    """Why every parity test draws gamma away from zero: at init, attention is invisible."""
    x = torch.randn(2, 16, 3, 5)
    assert torch.equal(PAM_Module(16)(x), x)
    assert torch.equal(CAM_Module(16)(x), x)


small_shapes = st.tuples(
    st.integers(1, 3), st.integers(8, 20), st.integers(1, 6), st.integers(1, 6)
)


@given(shape=small_shapes, seed=st.integers(0, 2**32 - 1))
def test_pam_matches_the_equations(shape, seed):
    rng = np.random.default_rng(seed)
    module = PAM_Module(shape[1]).double()
    state = {k: rng.standard_normal(tuple(v.shape)) * 0.3 for k, v in module.state_dict().items()}
    module.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    x = rng.standard_normal(shape)
    got = module(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(got, pam_numpy(x, state), rtol=1e-12, atol=1e-12)


@given(shape=small_shapes, seed=st.integers(0, 2**32 - 1))
def test_cam_matches_the_equations(shape, seed):
    rng = np.random.default_rng(seed)
    module = CAM_Module(shape[1]).double()
    gamma = rng.standard_normal()
    module.gamma.data.fill_(gamma)
    x = rng.standard_normal(shape) * 0.3
    got = module(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(got, cam_numpy(x, gamma), rtol=1e-12, atol=1e-12)
