"""``parity check --port``: anyone's port, through the command itself.

Every planted buggy port is rejected (exit 1) with the right diagnosis, every faithful one
passes (exit 0), ports that cannot hold weights are named for what they are, and the report
is valid JSON with pictures.
"""

import json
from pathlib import Path

import jsonschema
import pytest

from parity.frontends.report import SCHEMA
from tests.helpers import run_cli as run

PORTS = "tests.power.ports"
BLOG = "tests.power.blog_ports"
HEADS = "tests.power.head_ports"

# port -> (module, the hypothesis the diagnosis must name first)
BUGS = {
    f"{PORTS}:PAMReadsNHWCAsNCHW": ("pam", {"NHWC read as NCHW"}),
    f"{PORTS}:PAMSoftmaxWrongAxis": ("pam", {"softmax over the wrong axis"}),
    f"{PORTS}:PAMAttentionUntransposed": ("pam", {"attention applied transposed"}),
    f"{PORTS}:PAMQueryKeySwapped": ("pam", {"query and key swapped"}),
    f"{PORTS}:PAMNoResidual": ("pam", {"residual missing"}),
    f"{PORTS}:PAMGradientBlocked": ("pam", {"bug only in gradients"}),
    f"{PORTS}:PAMFloat16Attention": ("pam", {"precision-level deviation"}),
    f"{PORTS}:PAMMixesBatch": (
        "pam",
        {"information leaking across the batch", "attention mixed across the batch"},
    ),
    f"{PORTS}:PAMFlattensColumnMajor": ("pam", {"positions flattened in the wrong order"}),
    f"{PORTS}:PAMWritesCNAsNHWC": ("pam", {"(C, N) buffer written as NHWC"}),
    f"{PORTS}:PAMKernelsReadAsOIHW": (
        "pam",
        {"kernel layout: OIHW reshaped into HWIO without a transpose"},
    ),
    f"{PORTS}:PAMGammaUnused": ("pam", {"gamma not loaded"}),
    f"{PORTS}:PAMNamesSwapped": ("pam", {"query and key swapped"}),
    f"{PORTS}:PAMDropoutLeftOn": ("pam", {"nondeterministic outputs"}),
    f"{PORTS}:CAMReadsNHWCAsNCHW": ("cam", {"NHWC read as NCHW"}),
    f"{PORTS}:CAMSoftmaxWrongAxis": ("cam", {"softmax over the wrong axis"}),
    f"{PORTS}:CAMAttentionUntransposed": ("cam", {"attention applied transposed"}),
    f"{PORTS}:CAMWithoutMaxMinus": ("cam", {"CAM without the max-minus step"}),
    f"{PORTS}:CAMNoResidual": ("cam", {"residual missing"}),
    f"{PORTS}:CAMGradientBlocked": ("cam", {"bug only in gradients"}),
    f"{PORTS}:CAMFloat16Attention": ("cam", {"precision-level deviation"}),
    f"{PORTS}:CAMMixesBatch": (
        "cam",
        {"information leaking across the batch", "attention mixed across the batch"},
    ),
    f"{PORTS}:CAMFlattensColumnMajor": ("cam", {"positions flattened in the wrong order"}),
    f"{PORTS}:CAMThreeBugs": (
        "cam",
        {
            "residual missing + CAM without the max-minus step + attention applied transposed",
            "residual missing + attention applied transposed + CAM without the max-minus step",
        },
    ),
    f"{HEADS}:HeadOutputsReordered": ("head", {"outputs in another order"}),
    f"{HEADS}:HeadKerasDefaultEpsilon": ("head", {"BatchNorm epsilon at Keras' default"}),
    f"{HEADS}:HeadNoReLUAfterNorm": ("head", {"ReLU missing after conv51's norm"}),
    f"{HEADS}:HeadReLUBeforeNorm": ("head", {"ReLU before conv5a's norm"}),
}

# Replayed through the command line too, one per module and kind of cause: the driver
# replays every counterexample before it prints it (tests/test_driver's confirmation), so
# these show that the printed line parses back to the same example, port and diagnosis.
REPLAYED = {
    f"{PORTS}:PAMQueryKeySwapped",
    f"{PORTS}:PAMGradientBlocked",
    f"{PORTS}:CAMWithoutMaxMinus",
    f"{HEADS}:HeadKerasDefaultEpsilon",
}

# ports that cannot be compared at all -> what the diagnosis must say
UNCOMPARABLE = {
    f"{BLOG}:PAMFreshLayersEachCall": "weights created anew on every call",
    f"{PORTS}:PAMGammaNotTrainable": "a parameter that is not trained",
    f"{PORTS}:PAMAssumesSquareInput": "crashes when H != W",
    f"{PORTS}:PAMTransposesSpatialAxes": "spatial axes transposed",
    f"{HEADS}:HeadValidPadding": "padding 'valid' where the reference pads",
}

FAITHFUL = {
    f"{PORTS}:PAMEinsum": "pam",
    f"{PORTS}:PAMRowChunked": "pam",
    f"{PORTS}:CAMEinsum": "cam",
    f"{PORTS}:CAMSoftmaxOfNegativeEnergy": "cam",
    f"{PORTS}:CAMShiftedByRowMean": "cam",
    f"{PORTS}:PAMConv1D": "pam",
    f"{PORTS}:CAMShiftedByGlobalMax": "cam",
    f"{BLOG}:pam_function": "pam",
    f"{BLOG}:cam_function": "cam",
}


def load_report(directory: Path, module: str) -> dict:
    report = json.loads((directory / module / "report.json").read_text())
    jsonschema.validate(report, SCHEMA)
    return report


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A working directory that must stay empty except for the report."""
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    assert {p.name for p in tmp_path.iterdir()} <= {"report"}


@pytest.mark.parametrize("port", BUGS)
def test_planted_bug_is_rejected_with_its_diagnosis(port, workdir, capsys):
    module, expected = BUGS[port]
    status, out, _ = run(
        ["check", module, "--port", port, "--examples", "25", "--report", "report"], capsys
    )
    assert status == 1, out
    report = load_report(workdir / "report", module)
    assert report["verdict"] == "fail"
    diagnosis = report["diagnosis"]
    assert diagnosis["explained"], out
    named = [h["hypothesis"] for h in diagnosis["hypotheses"] if h["explains"]]
    assert named and named[0] in expected, out
    assert "Minimal counterexample:" in out and "Replay: parity check" in out
    assert "passes when checked as" not in out  # a bug, not the other data format
    if port not in REPLAYED:
        return  # the driver printed the counterexample only once it had replayed it
    replay = next(line for line in out.splitlines() if line.startswith("Replay: "))
    status, replayed, _ = run(replay.removeprefix("Replay: parity ").split(), capsys)
    assert status == 1, replayed  # the printed counterexample fails again, for the same cause
    cause = next(line for line in out.splitlines() if line.startswith("Diagnosis:"))
    assert cause in replayed.splitlines(), replayed


def test_a_faithful_channels_first_port_checked_as_channels_last_is_told_the_flag(workdir, capsys):
    """Read as NHWC, a faithful NCHW port fails on every tensor; the verdict stays "fail"
    (the check as asked fails), and a note gives the flag and the command that passes."""
    port = f"{PORTS}:pam_channels_first"
    status, out, _ = run(["check", "pam", "--port", port, "--examples", "10"], capsys)
    assert status == 1, out
    note = next(line for line in out.splitlines() if "passes when checked as" in line)
    assert note.startswith("Note: the port passes when checked as channels_first"), note
    command = note[note.index("parity check") :]
    assert "--data-format channels_first" in command
    status, passed, _ = run(command.removeprefix("parity ").split(), capsys)
    assert status == 0, passed


def test_a_failure_that_does_not_replay_is_not_printed_as_a_counterexample(workdir, capsys):
    """What we print must be true: a port whose result depends on the calls before it fails
    in the search and passes alone, so the command says so and prints no replay."""
    port = f"{PORTS}:CAMTemperatureAfterWarmUp"
    status, out, _ = run(["check", "cam", "--port", port, "--examples", "25"], capsys)
    assert status == 1, out
    assert "passes when that example is checked alone" in out, out
    assert "state kept between calls" in out, out
    assert "Minimal counterexample:" not in out and "Replay:" not in out, out


def test_a_shrink_cut_short_is_said_in_a_note_not_in_hypothesis_words(monkeypatch, workdir, capsys):
    """Hypothesis gives up shrinking after five minutes (a few steps of the full-width
    DANet): the user reads that the counterexample may not be minimal, not its plea."""
    from hypothesis.internal.conjecture import engine

    monkeypatch.setattr(engine, "MAX_SHRINKING_SECONDS", 0)
    port = f"{PORTS}:CAMSoftmaxWrongAxis"
    status, out, _ = run(["check", "cam", "--port", port, "--examples", "10"], capsys)
    assert status == 1, out
    assert "Note: shrinking stopped at Hypothesis' five-minute limit" in out, out
    assert "PLEASE REPORT THIS" not in out and "Replay: parity check" in out, out


@pytest.mark.parametrize("port", UNCOMPARABLE)
def test_ports_that_cannot_be_compared_are_named_for_what_they_are(port, workdir, capsys):
    module = "head" if port.startswith(HEADS) else "pam"
    status, out, _ = run(
        ["check", module, "--port", port, "--examples", "20", "--report", "report"], capsys
    )
    assert status == 1
    report = load_report(workdir / "report", module)
    assert UNCOMPARABLE[port] in report["diagnosis"]["cause"], out
    assert UNCOMPARABLE[port] in out
    if "Minimal counterexample:" in out:  # a crash: its shape replays
        replay = next(line for line in out.splitlines() if line.startswith("Replay: "))
        status, replayed, _ = run(replay.removeprefix("Replay: parity ").split(), capsys)
        assert status == 1 and UNCOMPARABLE[port] in replayed, replayed
    else:  # weights it cannot hold: no shape is involved
        assert "Replay:" not in out


@pytest.mark.parametrize("port", FAITHFUL)
def test_faithful_port_passes(port, workdir, capsys):
    module = FAITHFUL[port]
    status, out, _ = run(
        ["check", module, "--port", port, "--examples", "30", "--report", "report"], capsys
    )
    assert status == 0, out
    report = load_report(workdir / "report", module)
    assert report["verdict"] == "pass" and report["examples_run"] == 30
    assert report["counterexample"] is None and report["diagnosis"] is None


def test_swapped_names_fail_by_default_and_pass_with_the_suggested_weight_map(workdir, capsys):
    port = f"{PORTS}:PAMNamesSwapped"
    status, out, _ = run(
        ["check", "pam", "--port", port, "--examples", "20", "--report", "report"], capsys
    )
    assert status == 1
    suggestion = load_report(workdir / "report", "pam")["diagnosis"]["suggestion"]
    mapping = json.loads(suggestion[suggestion.index("{") :])
    assert mapping["query_conv.weight"] == "key_conv/kernel"
    map_file = workdir / "report" / "weight_map.json"
    map_file.write_text(json.dumps(mapping))
    status, out, _ = run(
        ["check", "pam", "--port", port, "--weight-map", str(map_file), "--examples", "30"], capsys
    )
    assert status == 0, out


def test_report_of_a_failure_has_pictures_and_a_replay(workdir, capsys):
    port = f"{PORTS}:PAMFlattensColumnMajor"
    run(["check", "pam", "--port", port, "--examples", "20", "--report", "report"], capsys)
    report = load_report(workdir / "report", "pam")
    assert report["pictures"][:3] == ["error_map.png", "channel_errors.png", "side_by_side.png"]
    drawn = report["pictures_of"]
    worst_drawn_apart = drawn["worst_tensor"] != drawn["activation"]
    assert ("worst_tensor.png" in report["pictures"]) == worst_drawn_apart
    for picture in report["pictures"]:
        assert (workdir / "report" / "pam" / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report["replay"].startswith(f"parity check pam --port {port} --example ")
    assert report["weight_map"]["query_conv.weight"].endswith("query_conv/kernel")
    failing = [c for c in report["comparisons"] if not c["passed"]]
    assert failing and all(len(c["worst_index"]) == len(c["shape"]) for c in failing)


def test_the_replay_command_reproduces_the_failure(workdir, capsys):
    port = f"{PORTS}:PAMSoftmaxWrongAxis"
    _, out, _ = run(["check", "pam", "--port", port, "--examples", "20"], capsys)
    replay = next(line for line in out.splitlines() if line.startswith("Replay: "))
    argv = replay.removeprefix("Replay: parity ").split()
    status, replayed, _ = run(argv, capsys)
    assert status == 1
    assert "softmax normalises over the query positions" in replayed


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["check", "pam", "--port", "no_such_module:make"],
            "cannot import module 'no_such_module'",
        ),
        (["check", "pam", "--port", f"{BLOG}:missing"], "has no attribute 'missing'"),
        (["check", "pam", "--port", f"{BLOG}:NOT_CALLABLE"], "not a callable factory"),
        (
            ["check", "pam", "--port", f"{BLOG}:pam_factory_that_raises"],
            "the factory raised on channels=",
        ),
        (["check", "pam", "--port", "no-colon"], "--port expects MODULE:FACTORY"),
        (["check", "pam", "cam", "--port", f"{PORTS}:PAMEinsum"], "--port checks one module"),
        (["check", "pam", "--weight-map", "m.json"], "give --port too"),
        (["check", "pam", "--examples", "0"], "must be at least 1, got 0"),
        (["check", "sam"], "unknown module 'sam'"),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_2(argv, message, workdir, capsys):
    status, out, err = run(argv, capsys)
    assert status == 2
    assert message in err
    assert "Traceback" not in err + out


def test_weight_map_naming_unknown_keys_is_exit_2(workdir, capsys):
    (workdir / "report").mkdir()
    map_file = workdir / "report" / "bad.json"
    map_file.write_text(json.dumps({"query_conv.wieght": "x/kernel"}))
    status, _, err = run(
        ["check", "pam", "--port", f"{PORTS}:PAMEinsum", "--weight-map", str(map_file)], capsys
    )
    assert status == 2
    assert "reference parameters that do not exist: ['query_conv.wieght']" in err


def test_unwritable_report_directory_is_exit_2(workdir, capsys):
    (workdir / "report").write_text("a file, not a folder")
    status, _, err = run(["check", "cam", "--examples", "2", "--report", "report/out"], capsys)
    assert status == 2
    assert "--report report/out:" in err and "is a file, not a directory" in err


def test_pytest_runs_the_whole_property_suite_against_a_port():
    """``pytest --parity-port`` swaps the port under the project's own parity properties
    (they run once: from tests/test_parity.py, not added a second time by the plugin)."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "tests/test_parity.py",
            "-k",
            "outputs",
            "--parity-port",
            f"{PORTS}:PAMSoftmaxWrongAxis",
            "--hypothesis-profile",
            "ci",
        ],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 1, result.stdout[-2000:]
    assert "port under test: tests.power.ports:PAMSoftmaxWrongAxis" in result.stdout
    assert "1 failed" in result.stdout
    assert f"Replay: parity check pam --port {PORTS}:PAMSoftmaxWrongAxis --example" in result.stdout


ROOT = Path(__file__).resolve().parents[1]


def test_a_pair_of_your_own_runs_the_same_checks(monkeypatch, capsys):
    """The docs' squeeze-and-excitation example: the spec passes, a buggy port fails."""
    monkeypatch.chdir(ROOT)
    spec = "examples.squeeze_excitation:SE_PAIR"
    status, out, _ = run(["check", "--spec", spec, "--examples", "30"], capsys)
    assert status == 0, out
    assert "grad[fc1.weight]" in out and "se: pass" in out
    buggy = "examples.squeeze_excitation:SqueezeExciteForgetsTheSigmoid"
    status, out, _ = run(["check", "--spec", spec, "--port", buggy, "--examples", "30"], capsys)
    assert status == 1
    assert f"Replay: parity check --spec {spec} --port {buggy} --example" in out


def test_spec_that_is_not_a_pair_is_exit_2(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    status, _, err = run(["check", "--spec", "examples.squeeze_excitation:SEBlock"], capsys)
    assert status == 2
    assert "is a type, not a ModulePair" in err
