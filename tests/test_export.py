"""The artifact users ship (``parity check --export``): each format of the bundled ports
passes against the float64 reference, a user's port passes from its module, and planted
export bugs are rejected for their reason and located inside the artifact."""

import json
import sys
from dataclasses import replace

import keras
import pytest

from parity.core import registry
from parity.core.strategies import Example
from parity.diagnosis.explain import explain
from parity.diagnosis.localize import localize
from parity.diagnosis.quantization import quantization_trace
from parity.run.driver import Budget, find_counterexample
from tests.helpers import run_cli

pytest.importorskip("onnxruntime", reason="the export extra is not installed")
pytest.importorskip("ai_edge_litert", reason="the export extra is not installed")
pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="artifacts are exported through TensorFlow"
)

from parity.core.artifacts import ARTIFACTS  # noqa: E402
from parity.run.exported import ArtifactChecker, exported_checker  # noqa: E402

EXAMPLES = (Example(1, 8, 1, 1, 1.0, 0), Example(2, 32, 3, 4, 2.0, 1))
QUERY = "query = self.query_conv(x).view(B, -1, N).permute(0, 2, 1)"


@pytest.mark.parametrize("artifact", [n for n, a in ARTIFACTS.items() if not a.quantized])
def test_the_bundled_ports_pass_as_every_artifact(artifact):
    """PAM, CAM and the head (three outputs, read back in the model's order) as shipped."""
    for module in ("pam", "cam", "head"):
        pair = registry.pair(module)
        checker = exported_checker(pair, artifact)
        for example in EXAMPLES:
            example = example._replace(channels=max(example.channels, pair.min_channels))
            report = checker.check(example)
            failures = report.describe_failures()
            assert report.passed, f"{module} as {artifact} on {example}: {failures}"
            names = [c.name for c in report.comparisons]
            assert all(n.startswith("output") for n in names), names  # no gradients


def test_a_faithful_artifact_computes_every_line():
    """The localization reads the artifact's own tensors: a faithful file holds every line."""
    for artifact in ("saved_model", "tflite", "onnx"):
        found = localize(exported_checker(registry.pair("pam"), artifact), EXAMPLES[1])
        assert found is not None and found.first_wrong is None, found.describe()


def test_float16_weights_judged_as_float32_are_rejected_and_located():
    """A float16 file passed off as float32: the first line it misses is the first
    convolution's, and the operation to look at is the file's own."""
    planted = replace(ARTIFACTS["tflite-fp16"], name="fp16-as-float32", precision="float32")
    checker = ArtifactChecker(registry.pair("pam"), planted)
    outcome = find_counterexample(checker, budget=Budget(examples=10, shrink=False))
    assert outcome.counterexample is not None, outcome.failure
    assert not outcome.report.passed
    found = explain(checker, outcome.counterexample, crashed=False).localization
    assert found is not None and found.first_wrong is not None, found
    assert QUERY in found.first_wrong.source, found.describe()
    assert any(value.op == "CONV_2D" for value in found.readers), found.describe()


def test_an_export_traced_in_training_mode_is_rejected_for_its_dropout():
    """The head exported with training=True: its dropout draws a new mask per call, named
    as such before anything else."""
    planted = replace(ARTIFACTS["saved_model"], name="training-mode", training=True)
    checker = ArtifactChecker(registry.pair("head"), planted)
    outcome = find_counterexample(checker, budget=Budget(examples=5, shrink=False))
    assert outcome.counterexample is not None, outcome.failure
    diagnosis = explain(checker, outcome.counterexample, crashed=False).diagnosis
    assert "nondeterministic" in diagnosis.text(), diagnosis.text()


def test_the_command_checks_a_users_port_as_an_artifact(capsys):
    port = "tests.power.wild_ports:pam_inline_alpha"
    argv = ["check", "pam", "--port", port, "--export", "tflite", "--examples", "3"]
    status, out, _ = run_cli(argv, capsys)
    assert status == 0, out
    assert "pam: 3 examples passed" in out, out
    assert "Note: tflite: outputs only" in out, out


def test_a_missing_runtime_is_one_line_with_the_install_command(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime fails
    status, out, err = run_cli(["check", "cam", "--export", "onnx", "--examples", "1"], capsys)
    assert status == 2, out + err
    assert err.strip().splitlines() == [
        "parity: error: --export onnx needs the Python module 'onnxruntime', which is not "
        'installed: pip install "danet-parity[export]"'
    ], err


def test_export_with_a_training_step_is_a_usage_error(capsys):
    status, _, err = run_cli(["check", "head", "--export", "tflite", "--train", "sgd"], capsys)
    assert status == 2 and "--train needs the port itself" in err, err


def test_an_int8_file_is_measured_in_quantization_steps(capsys):
    """No parity claimed: each output's error in units of its own quantization step."""
    argv = ["check", "cam", "--export", "tflite-int8", "--examples", "2"]
    status, out, _ = run_cli(argv, capsys)
    assert status == 0, out
    assert "cam: int8 measured on 2 examples" in out, out
    assert "no float parity claimed" in out and "cam: measured" in out, out
    worst = float(out.split("cam: worst at ")[1].split(": ")[1].split(" steps")[0])
    assert 0.5 <= worst < 1e3, out  # at least the output's own rounding; a step found
    assert "Where the int8 file loses precision" in out, out


def test_an_int8_softmax_coarser_than_its_weights_is_where_precision_goes():
    """PAM on a small input: every attention weight (about 1/N, N = 400) lies under the
    fixed int8 step of TFLite's softmax (1/256), so the softmax is the first line past the
    budget, said with its step against its values; on an ordinary input every line keeps
    the budget."""
    checker = exported_checker(registry.pair("pam"), "tflite-int8")
    small = quantization_trace(checker, Example(1, 16, 20, 20, 0.005, 1))
    first = small.first_past_budget
    assert first is not None and "self.softmax(energy)" in first.step.source, small.describe()
    assert first.tensor.op == "SOFTMAX" and "coarser than they are" in first.why()
    assert small.most_lost is first, small.describe()
    ordinary = quantization_trace(checker, Example(2, 32, 5, 7, 0.5, 0))
    assert ordinary.first_past_budget is None, ordinary.describe()
    assert all(line.tensor is not None for line in ordinary.lines), ordinary.describe()


def test_an_int8_report_page_says_it_is_a_measurement(capsys, tmp_path):
    argv = ["check", "cam", "--export", "tflite-int8", "--examples", "1", "--report", str(tmp_path)]
    status, out, err = run_cli(argv, capsys)
    assert status == 0, out + err
    page = (tmp_path / "cam" / "report.html").read_text()
    assert "measured, not judged" in page
    assert "Where the int8 file loses precision" in page
    traced = json.loads((tmp_path / "cam" / "report.json").read_text())["quantization"]
    assert traced["lines"] and traced["budget_bits"] == 2.0, traced
    held = [line for line in traced["lines"] if line["tensor"] is not None]
    assert held and all(line["bits_kept"] > 0 for line in held), traced


def test_a_file_the_default_delegate_refuses_is_run_without_it_and_said(monkeypatch):
    """LiteRT's XNNPACK delegate refuses some files (the narrow DANet's int8 one): the
    error users would get is said in a note, and the file is run with the built-in kernels."""
    from parity.backends.keras import export

    built = export._interpreter

    def refusing(path, preserve=False, delegate=True):
        if delegate and not preserve:
            raise RuntimeError(  # LiteRT's words on the narrow DANet's int8 file
                "failed to create XNNPACK runtimeNode number 98 (TfLiteXNNPackDelegate) "
                "failed to prepare."
            )
        return built(path, preserve, delegate)

    monkeypatch.setattr(export, "_interpreter", refusing)
    checker = exported_checker(registry.pair("pam"), "tflite")
    report = checker.check(EXAMPLES[1])
    assert report.passed, report.describe_failures()
    (note,) = [n for n in checker.notes if "XNNPACK" in n]
    assert "failed to create XNNPACK runtime" in note and "built-in kernels" in note, note


def test_an_int8_file_whose_max_pool_pads_with_infinity_is_lost_at_the_stem():
    """Padding with -inf before a max pool is exact in float; an int8 converter calibrates
    the pad's range with its input's, so the stem keeps no bit. The bundled port pads its
    post-ReLU max pool with 0 (the same in float) and keeps the budget there."""
    from tests.power.danet_ports import MaxPoolPaddedWithInfinity

    example = Example(1, 3, 12, 16, 1.0, 0)
    planted = replace(registry.pair("danet"), make_port=MaxPoolPaddedWithInfinity)
    trace = quantization_trace(exported_checker(planted, "tflite-int8"), example)
    first = trace.first_past_budget
    assert first is not None and "self.maxpool(" in first.step.source, trace.describe()
    assert "float32's largest number" in first.why(), trace.describe()
    bundled = quantization_trace(exported_checker(registry.pair("danet"), "tflite-int8"), example)
    stem = next(line for line in bundled.lines if "self.maxpool(" in line.step.source)
    assert stem.bits > 4, bundled.describe()
