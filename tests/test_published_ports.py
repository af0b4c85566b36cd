"""Ports as their authors publish them, through ``parity check --port`` with no flags: the
right exit status and the real cause named, and every printed counterexample replays.

The ports (``tests/power/published_ports.py``) are written for this suite in the styles seen
on GitHub: shapes pinned at the first build, a static batch, ``use_bias=False``, query and
key named the other way round, layers built in ``call()``, BatchNorm on query and key,
PyTorch's ``.view`` carried over to NHWC, ``gamma`` in a bare ``tf.Variable``, the compound
CAM bug, and two bugs no hypothesis covers (said to be unexplained, nothing named as cause).
"""

import json

import keras
import pytest

from tests.helpers import run_cli as run

PUBLISHED = "tests.power.published_ports"

# port -> (module, exit status, what the output must say)
CASES = {
    "PAMPinned": (
        "pam",
        0,
        [
            "pam: pass",
            "Note: the port did better on a fresh instance built for the example's shape",
        ],
    ),
    "pam_static_batch": ("pam", 0, ["pam: pass"]),
    "PAMPinnedSoftmaxWrongAxis": (
        "pam",
        1,
        ["Diagnosis: the softmax normalises over the query positions"],
    ),
    "PAMNoBias": (
        "pam",
        1,
        [
            "the port has no counterpart for query_conv.bias, key_conv.bias, value_conv.bias",
            "the rest of the port matches it on 6 examples",
        ],
    ),
    "PAMNoBiasReadsNCHW": (
        "pam",
        1,
        [
            "Diagnosis: channels and positions confused: NHWC tensors are reshaped",
            "the port has no counterpart for query_conv.bias",
        ],
    ),
    "PAMKeyNamedQuery": (
        "pam",
        1,
        ["Diagnosis: the port's `k` computes the reference's query and its `q` the reference's"],
    ),
    "PAMConvsInCall": ("pam", 1, ["weights created anew on every call"]),
    "PAMBatchNormQueryKey": (
        "pam",
        2,
        [
            "another architecture, not a port of this module: its query is a 16 -> 16 "
            "convolution (query_conv/kernel) where the reference's query_conv maps 16 -> 2",
            "normalisation layers the reference does not (key_bn, query_bn",
            'name its weights: --weight-map FILE.json with {"query_conv.weight": "?"',
        ],
    ),
    "PAMConvBatchNormReLU": (
        "pam",
        2,
        [
            "normalisation layers the reference does not (block_1/bn, block_2/bn, "
            "block_3/bn: BatchNorm",
            "port weights no reference parameter maps to: block_1/bn/gamma (2,), "
            "block_1/bn/beta (2,), block_2/bn/gamma (2,), block_2/bn/beta (2,), "
            "block_3/bn/gamma (16,), block_3/bn/beta (16,)",
        ],
    ),
    "CAMBareGamma": (
        "cam",
        1,
        [
            "a parameter that is not a tracked weight: the port keeps gamma in gamma (1,)",
            "With the reference's values assigned to them, the port matches the reference on "
            "6 examples",
        ],
    ),
    "CAMBareTemperature": ("cam", 0, ["cam: pass"]),
    "CAMBareGammaSoftmaxTransposed": (
        "cam",
        1,
        [
            "Diagnosis: two bugs at once: the attention matrix is applied transposed",
            "a parameter that is not a tracked weight: the port keeps gamma in gamma (1,)",
            "The rest was checked with the reference's values assigned to them",
        ],
    ),
    "CAMSoftmaxTransposed": (
        "cam",
        1,
        [
            "Diagnosis: two bugs at once: the attention matrix is applied transposed",
            "the max-minus step is missing",
        ],
    ),
    "CAMFirstSampleAttention": (
        "cam",
        1,
        [
            "Diagnosis: unexplained. no named hypothesis explains it, nor comes 10x closer to "
            "the port than the reference",
            "CAM without the max-minus step explains the failing example but not a richer one",
            "no pair or triple of known bugs explains it either",
        ],
    ),
    "cam_views_nhwc_as_nchw": (
        "cam",
        1,
        ["Diagnosis: channels and positions confused: the NHWC input is reshaped"],
    ),
}


def assert_replay_reproduces(out: str, capsys) -> str:
    """The printed replay command fails again, with the same diagnosis."""
    replay = next(line for line in out.splitlines() if line.startswith("Replay: "))
    status, replayed, _ = run(replay.removeprefix("Replay: parity ").split(), capsys)
    assert status == 1, replayed
    diagnosis = [line for line in out.splitlines() if line.startswith("Diagnosis:")]
    assert diagnosis == [line for line in replayed.splitlines() if line.startswith("Diagnosis:")]
    return replayed


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("port", CASES)
def test_published_style_port_gets_its_verdict_and_cause(port, workdir, capsys):
    module, expected_status, messages = CASES[port]
    argv = ["check", module, "--port", f"{PUBLISHED}:{port}", "--examples", "6"]
    status, out, err = run(argv, capsys)
    assert status == expected_status, out + err
    for message in messages:  # exit 2 says it in one line on stderr
        assert message in (out if status != 2 else err), out + err
    assert "Traceback" not in out + err and "Warning" not in err, err
    if "Minimal counterexample: batch=1," in out:  # nothing can leak across a batch of one
        assert "leaks across the batch" not in out, out
    if "Minimal counterexample:" in out:
        assert_replay_reproduces(out, capsys)
    elif status == 1:  # weights it cannot hold: no shape is involved
        assert "Replay:" not in out


def test_declared_absent_biases_pass_and_are_said(workdir, capsys):
    port = f"{PUBLISHED}:PAMNoBias"
    argv = ["check", "pam", "--port", port, "--examples", "6"]
    status, out, _ = run([*argv, "--absent", "*.bias"], capsys)
    assert status == 0, out
    assert "Note: held at zero in the reference, as declared" in out
    declared = {"query_conv.weight": "q/kernel", "query_conv.bias": None}
    declared.update({"key_conv.bias": None, "value_conv.bias": None})
    (workdir / "map.json").write_text(json.dumps(declared))
    status, out, _ = run([*argv, "--weight-map", "map.json"], capsys)
    assert status == 0, out
    assert "query_conv.bias, key_conv.bias, value_conv.bias" in out


def test_query_and_key_named_the_other_way_round_pass_with_the_printed_map(workdir, capsys):
    port = f"{PUBLISHED}:PAMKeyNamedQuery"
    _, out, _ = run(["check", "pam", "--port", port, "--examples", "6"], capsys)
    mapping = json.JSONDecoder().raw_decode(out[out.index("{\n") :])[0]
    assert mapping["query_conv.weight"] == "k/kernel" and mapping["key_conv.weight"] == "q/kernel"
    (workdir / "map.json").write_text(json.dumps(mapping))
    argv = ["check", "pam", "--port", port, "--examples", "6", "--weight-map", "map.json"]
    status, out, _ = run(argv, capsys)
    assert status == 0, out


def test_a_fused_qkv_convolution_maps_by_its_slices(workdir, capsys):
    """One convolution for query, key and value, split afterwards: mapped onto its slices in
    the reference's order, with a note; split in another order, a map of slices fixes it."""
    port = "tests.power.wild_ports:PAMFusedKQV"
    argv = ["check", "pam", "--port", port, "--example", "1,16,2,3,1.0,0"]
    status, out, _ = run(argv, capsys)
    assert status == 1, out
    assert "Note: parameters mapped onto slices of a fused weight's last axis" in out, out
    slices = {"query_conv": "[2:4]", "key_conv": "[0:2]", "value_conv": "[4:20]"}
    mapping = {
        f"{conv}.{kind}": f"qkv/{'kernel' if kind == 'weight' else 'bias'}{part}"
        for conv, part in slices.items()
        for kind in ("weight", "bias")
    }
    (workdir / "map.json").write_text(json.dumps(mapping))
    status, out, _ = run([*argv, "--weight-map", "map.json"], capsys)
    assert status == 0, out


def test_weight_map_errors_list_the_attribute_paths(workdir, capsys):
    (workdir / "map.json").write_text(json.dumps({"query_conv.weight": "conv2d_3/kernel"}))
    port = f"{PUBLISHED}:PAMKeyNamedQuery"
    status, _, err = run(["check", "pam", "--port", port, "--weight-map", "map.json"], capsys)
    assert status == 2
    known = ["gamma", "k/kernel", "k/bias", "q/kernel", "q/bias", "v/kernel", "v/bias"]
    assert f"(known: {known})" in err


@pytest.mark.skipif(
    keras.backend.backend() == "tensorflow", reason="TensorFlow's functions take its tensors"
)
def test_a_port_that_calls_tensorflow_is_told_to_run_on_tensorflow(workdir, capsys):
    """On another backend TensorFlow raises on the backend's tensors, with a message that
    names neither (PyTorch: "Can't call numpy() on Tensor that requires grad"): the check
    cannot run there, so exit status 2 and the port's line that calls TensorFlow."""
    argv = ["check", "pam", "--port", f"{PUBLISHED}:PAMPinned", "--examples", "4"]
    status, out, err = run(argv, capsys)
    assert status == 2, out + err
    assert err.strip().splitlines()[-1] == (
        "parity: error: pam: the port calls TensorFlow (published_ports.py:35: query = "
        "tf.reshape(self.query_conv(x), (-1, n, c // 8))), whose functions cannot take the "
        f"{keras.backend.backend()} backend's tensors: check it with KERAS_BACKEND=tensorflow, "
        "or write it with keras.ops"
    )
    assert out == "" and "Traceback" not in err
