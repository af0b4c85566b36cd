"""``parity convert``: PyTorch checkpoints into Keras weights and back, strict, safe, atomic."""

import os
import pickle

import numpy as np
import pytest
import torch
from keras.ops import convert_to_numpy as to_numpy
from safetensors.numpy import load_file

from impl_keras import DANetHead, PositionAttention
from parity.core.layout import nchw_to_nhwc, nhwc_to_nchw
from parity.core.policy import compare
from parity.core.spec import random_parameters
from parity.frontends.cli.main import main
from parity.frontends.convert import load_keras_weights
from reference_torch import DANetHead as TorchHead
from reference_torch import PAM_Module
from tests.helpers import run_cli as run


def random_module(module, seed=0):
    state = random_parameters(module, np.random.default_rng(seed))
    module.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    return module.eval()


@pytest.fixture
def danet_checkpoint(tmp_path):
    """A full DANet-style checkpoint: the head under 'head.', a backbone, training state."""
    head = random_module(TorchHead(64, 5))
    for name, buffer in head.named_buffers():
        if name.endswith("num_batches_tracked"):
            buffer.fill_(1234)
    state = {f"head.{k}": v for k, v in head.state_dict().items()}
    state["pretrained.conv1.weight"] = torch.zeros(8, 3, 7, 7)
    path = tmp_path / "danet.pth"
    torch.save({"epoch": 7, "state_dict": state, "best_pred": 0.5}, path)
    return head, path


def test_round_trip_pytorch_keras_pytorch_is_bit_for_bit(danet_checkpoint, tmp_path, capsys):
    head, source = danet_checkpoint
    keras_file, back = tmp_path / "head.weights.h5", tmp_path / "head.safetensors"
    status, out, _ = run(["convert", str(source), str(keras_file), "--prefix", "head."], capsys)
    assert status == 0, out
    assert "converted 34 tensors" in out and "head.conv5a.1.num_batches_tracked" in out
    status, out, _ = run(["convert", str(keras_file), str(back), "--prefix", "head."], capsys)
    assert status == 0, out
    restored = load_file(back)
    original = head.state_dict()
    for key, value in original.items():
        if key.endswith("num_batches_tracked"):
            assert restored[f"head.{key}"] == 0  # no Keras counterpart: written as 0
            continue
        assert restored[f"head.{key}"].dtype == np.float32
        assert np.array_equal(restored[f"head.{key}"], value.numpy()), key
    assert len(restored) == len(original)
    reloaded = TorchHead(64, 5)
    reloaded.load_state_dict(
        {k.removeprefix("head."): torch.from_numpy(v) for k, v in restored.items()}, strict=True
    )


def test_converted_checkpoint_reproduces_the_pytorch_head(danet_checkpoint, tmp_path, capsys):
    """End to end from files: the Keras head loaded from the converted file matches the
    PyTorch head under the tolerance policy."""
    head, source = danet_checkpoint
    keras_file = tmp_path / "head.weights.h5"
    assert run(["convert", str(source), str(keras_file), "--prefix", "head."], capsys)[0] == 0
    layer = DANetHead(5)
    layer.build((None, None, None, 64))
    load_keras_weights(layer, keras_file)
    x = np.random.default_rng(1).standard_normal((2, 64, 6, 5)).astype("float32")
    truth = [y.detach().numpy() for y in head.double()(torch.from_numpy(x).double())]
    reference = [y.detach().numpy() for y in head.float()(torch.from_numpy(x))]
    port = [nhwc_to_nchw(to_numpy(y)) for y in layer(nchw_to_nhwc(x))]
    names = ["output[0]", "output[1]", "output[2]"]
    comparisons = compare(
        dict(zip(names, truth, strict=True)),
        dict(zip(names, reference, strict=True)),
        dict(zip(names, port, strict=True)),
    )
    assert all(c.passed for c in comparisons), [(c.name, c.ratio) for c in comparisons]


def test_pam_checkpoint_converts_without_prefix(tmp_path, capsys):
    module = random_module(PAM_Module(24))
    torch.save(module.state_dict(), tmp_path / "pam.pt")
    target = tmp_path / "pam.weights.h5"
    status, out, _ = run(
        ["convert", str(tmp_path / "pam.pt"), str(target), "--module", "pam"], capsys
    )
    assert status == 0, out
    layer = PositionAttention()
    layer.build((None, None, None, 24))
    load_keras_weights(layer, target)
    np.testing.assert_array_equal(to_numpy(layer.gamma), module.gamma.detach().numpy()[0])


def test_safetensors_input_converts(danet_checkpoint, tmp_path, capsys):
    from safetensors.torch import save_file

    head, _ = danet_checkpoint
    save_file(head.state_dict(), tmp_path / "head.safetensors")
    status, out, _ = run(
        ["convert", str(tmp_path / "head.safetensors"), str(tmp_path / "h.weights.h5")], capsys
    )
    assert status == 0, out


class _RunsCode:
    """A pickle that runs a command when loaded: what an untrusted checkpoint may hold."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_carries_code_is_refused_and_never_run(tmp_path, capsys):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    with open(evil, "wb") as handle:
        pickle.dump({"state_dict": {"conv5a.0.weight": _RunsCode(marker)}}, handle)
    target = tmp_path / "out.weights.h5"
    status, _, err = run(["convert", str(evil), str(target)], capsys)
    assert status == 2
    assert "refusing to load" in err and "may carry code" in err
    assert not marker.exists()
    assert not target.exists()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda s: s.pop("head.conv52.1.running_var"), "missing key 'head.conv52.1.running_var'"),
        (
            lambda s: s.update({"head.conv9.weight": torch.zeros(1)}),
            "unexpected key 'head.conv9.weight'",
        ),
        (
            lambda s: s.update({"head.conv6.1.bias": torch.zeros(4)}),
            "'head.conv6.1.bias': shape (4,)",
        ),
    ],
    ids=["missing", "unexpected", "mis-shaped"],
)
def test_mismatched_keys_are_refused_and_nothing_is_written(
    damage, message, danet_checkpoint, tmp_path, capsys
):
    _, source = danet_checkpoint
    checkpoint = torch.load(source, weights_only=True)
    damage(checkpoint["state_dict"])
    torch.save(checkpoint, source)
    target = tmp_path / "out" / "head.weights.h5"
    status, _, err = run(["convert", str(source), str(target), "--prefix", "head."], capsys)
    assert status == 2
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not target.exists()
    assert not list((tmp_path / "out").glob("*")) if (tmp_path / "out").exists() else True


def test_an_unexpected_key_can_be_ignored_by_name(danet_checkpoint, tmp_path, capsys):
    _, source = danet_checkpoint
    checkpoint = torch.load(source, weights_only=True)
    checkpoint["state_dict"]["head.extra.weight"] = torch.zeros(3)
    torch.save(checkpoint, source)
    target = tmp_path / "head.weights.h5"
    argv = ["convert", str(source), str(target), "--prefix", "head."]
    assert run(argv, capsys)[0] == 2
    status, out, _ = run([*argv, "--ignore", "extra.weight"], capsys)
    assert status == 0 and "head.extra.weight" in out


def test_a_failed_write_leaves_no_half_file(danet_checkpoint, tmp_path, monkeypatch, capsys):
    import keras

    _, source = danet_checkpoint
    target = tmp_path / "head.weights.h5"

    def crash(self, path, *args, **kwargs):
        with open(path, "wb") as handle:
            handle.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(keras.Model, "save_weights", crash)
    assert main(["convert", str(source), str(target), "--prefix", "head."]) == 2
    assert capsys.readouterr().err.strip() == f"parity: error: {target}: disk full"
    assert list(tmp_path.iterdir()) == [source]


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (("missing.pth", "out.weights.h5"), "no such checkpoint"),
        (("danet.pth", "out.onnx"), "cannot convert danet.pth into out.onnx"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(names, message, danet_checkpoint, tmp_path, capsys):
    status, _, err = run(
        ["convert", *(str(tmp_path / n) for n in names), "--prefix", "head."], capsys
    )
    assert status == 2 and message in err


@pytest.mark.parametrize(
    ("backbone", "deep_stem", "keys"), [("resnet50", True, 368), ("resnet101", False, 662)]
)
def test_a_whole_danet_checkpoint_converts_both_ways_bit_for_bit(
    backbone, deep_stem, keys, tmp_path, capsys
):
    """Backbone and head, the original's keys under a 'state_dict' wrapper, the depth (16 or
    33 bottlenecks), width and stem read off the keys going one way and off the kernels going
    back. Width 1 (the head sees 32 channels): the structure of the original at a fraction."""
    from reference_torch import DANet

    reference = random_module(DANet(5, backbone, width=1, deep_stem=deep_stem))
    original = reference.state_dict()
    assert len(original) == keys
    source = tmp_path / "danet.pth"
    torch.save({"epoch": 1, "state_dict": original}, source)
    keras_file, back = tmp_path / "danet.weights.h5", tmp_path / "danet.safetensors"
    status, out, _ = run(["convert", str(source), str(keras_file), "--module", "danet"], capsys)
    assert status == 0, out
    assert f"impl_keras.DANet(5, width=1, deep_stem={deep_stem}" in out
    status, out, _ = run(["convert", str(keras_file), str(back), "--module", "danet"], capsys)
    assert status == 0, out
    restored = load_file(back)
    assert sorted(restored) == sorted(original)
    for key, value in original.items():
        if not key.endswith("num_batches_tracked"):
            assert np.array_equal(restored[key], value.numpy()), key
    DANet(5, backbone, width=1, deep_stem=deep_stem).load_state_dict(
        {k: torch.from_numpy(v) for k, v in restored.items()}, strict=True
    )
