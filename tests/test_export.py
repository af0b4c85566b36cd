"""The artifact users ship (``parity check --export``): each format of the bundled ports
passes against the float64 reference, a user's port passes from its module, and planted
export bugs are rejected for their reason and located inside the artifact."""

import sys
from dataclasses import replace

import keras
import pytest

from parity.core import registry
from parity.core.strategies import Example
from parity.diagnosis.explain import explain
from parity.diagnosis.localize import localize
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


def test_an_int8_report_page_says_it_is_a_measurement(capsys, tmp_path):
    argv = ["check", "cam", "--export", "tflite-int8", "--examples", "1", "--report", str(tmp_path)]
    status, out, err = run_cli(argv, capsys)
    assert status == 0, out + err
    page = (tmp_path / "cam" / "report.html").read_text()
    assert "measured, not judged" in page
