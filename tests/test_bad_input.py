"""Bad input: one clear line, exit status 2, nothing written, for every case users hit.

Exit 1 means "the port is wrong" to CI, so a usage error must never end with it, nor with a
traceback. The argument-level cases are answered before TensorFlow or PyTorch is imported
(checked in a fresh interpreter); Ctrl-C ends with one line and status 130.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from parity.frontends.cli import main as cli
from tests.helpers import run_cli

ROOT = Path(__file__).resolve().parents[1]
PORTS = "tests.bad_input_ports"
READ_ONLY = "/sys/kernel"  # no directory can be made there, not even by root


def _prepare(workdir: Path) -> None:
    (workdir / "R").mkdir()
    (workdir / "R" / "cam").write_text("a file where the report's folder would go")
    (workdir / "two.json").write_text(
        json.dumps({"query_conv.weight": "query/kernel", "key_conv.weight": "query/kernel"})
    )
    torch.save({"value_conv.weight": torch.zeros(16)}, workdir / "flat.pth")
    (workdir / "empty.pth").write_bytes(b"")
    torch.save(torch.nn.Conv2d(16, 2, 1), workdir / "model.pth")  # a whole module pickled


# argv -> a part of the one line the command must print
CASES = {
    "zero side": (
        ["check", "pam", "--example", "2,8,0,5,1.0,0"],
        "batch, channels, H and W must be whole numbers of at least 1",
    ),
    "negative side": (["check", "pam", "--example", "2,8,3,-5,1.0,0"], "at least 1"),
    "negative seed": (
        ["check", "pam", "--example", "2,8,3,5,1.0,-1"],
        "seed must be a whole number from 0",
    ),
    "NaN scale": (["check", "pam", "--example", "2,8,3,5,nan,0"], "scale must be a finite number"),
    "PAM with C < 8": (
        ["check", "pam", "--example", "2,4,3,5,1.0,0"],
        "pam needs at least 8 channels, got 4",
    ),
    "attention beyond memory": (
        ["check", "pam", "--example", "1,8,4096,4096,1.0,0"],
        "would need about 9.01 PB for its attention maps alone",
    ),
    "factory's function returns None": (
        ["check", "pam", "--port", f"{PORTS}:pam_that_forgets_to_return"],
        "does not map a Keras tensor to a Keras tensor (it returned a NoneType)",
    ),
    "factory's function returns a tuple": (
        ["check", "pam", "--port", f"{PORTS}:pam_returning_a_shape"],
        "does not map a Keras tensor to a Keras tensor (it returned a tuple)",
    ),
    "--report R with R/cam a file": (["check", "cam", "--report", "R"], "--report R/cam is a file"),
    "--report R read-only": (
        ["check", "cam", "--report", READ_ONLY],
        f"cannot write --report {READ_ONLY}",
    ),
    "convert into a read-only directory": (
        ["convert", "flat.pth", f"{READ_ONLY}/pam.weights.h5", "--module", "pam"],
        "cannot write OUT",
    ),
    "convert with a 1-D size key": (
        ["convert", "flat.pth", "pam.weights.h5", "--module", "pam"],
        "'value_conv.weight' has shape (16,), not a convolution kernel",
    ),
    "bench --json into a missing directory": (
        ["bench", "--json", "no/such/dir.json"],
        "--json no/such/dir.json: no such directory no/such",
    ),
    "bench --plot into a missing directory": (
        ["bench", "--plot", "no/plot.png"],
        "no such directory no",
    ),
    "bench --shape beyond memory": (
        ["bench", "pam", "--shape", "1,8,4096,4096"],
        "would need about",
    ),
    "bench danet on 4 channels": (
        ["bench", "danet", "--shape", "1,4,9,7"],
        "--shape 1,4,9,7: danet takes at most 3 channels, got 4",
    ),
    "bench an unknown backbone": (
        ["bench", "danet", "--variant", "resnet152"],
        "unknown --variant 'resnet152'; expected one of ['resnet101', 'resnet50']",
    ),
    "check a variant that does not exist": (
        ["check", "danet", "--variant", "resnet152"],
        "danet has no variant 'resnet152'; expected one of ['resnet50', 'resnet101']",
    ),
    "check a variant of a module without any": (
        ["check", "pam", "--variant", "resnet50"],
        "pam has no variants; --variant resnet50 does not apply",
    ),
    "check a variant of every module": (
        ["check", "--variant", "resnet50"],
        "--variant checks one module at another size: name it",
    ),
    "bench a variant of a module without any": (
        ["bench", "pam", "--variant", "resnet50"],
        "--variant resnet50: none of the modules timed has variants",
    ),
    "bench an unknown Keras mode": (
        ["bench", "danet", "--modes", "eager,jit"],
        "argument --modes: expected some of eager,function,xla, comma-separated, got 'eager,jit'",
    ),
    "weight map: two parameters to one weight": (
        ["check", "pam", "--port", "tests.power.ports:PAMEinsum", "--weight-map", "two.json"],
        "sends both query_conv.weight and key_conv.weight to the port weight 'query/kernel'",
    ),
    "unknown module": (["check", "sam"], "unknown module 'sam'"),
    "--example and --examples": (
        ["check", "cam", "--example", "2,3,3,1,1.0,0", "--examples", "5"],
        "give either --example (one example, checked as it is) or --examples N",
    ),
    "--report empty": (["check", "cam", "--report", ""], "--report needs a path, got ''"),
    "port given as a file path": (
        ["check", "pam", "--port", "./my_port.py:make"],
        "did you mean --port my_port:make?",
    ),
    "port module that exits when imported": (
        ["check", "pam", "--port", "tests.bad_input_exits:make"],
        "called sys.exit(0): is it a script rather than the module that holds the port?",
    ),
    "port module that asks for input when imported": (
        ["check", "pam", "--port", "tests.bad_input_asks:make"],
        "cannot import module 'tests.bad_input_asks' for --port tests.bad_input_asks:make: "
        "EOFError",
    ),
    "factory returning a PyTorch module": (
        ["check", "pam", "--port", f"{PORTS}:pam_in_pytorch"],
        "the factory returned a PyTorch module (PAM_Module, a torch.nn.Module)",
    ),
    "absent naming no parameter": (
        ["check", "pam", "--port", "tests.power.ports:PAMEinsum", "--absent", "nothing.*"],
        "--absent nothing.* names no parameter of the reference",
    ),
    "convert an empty checkpoint": (
        ["convert", "empty.pth", "pam.weights.h5", "--module", "pam"],
        "empty.pth is empty",
    ),
    "convert a pickled model": (
        ["convert", "model.pth", "pam.weights.h5", "--module", "pam"],
        "not a state_dict of tensors",
    ),
    "no command": ([], "the following arguments are required: command"),
}
ARGUMENT_LEVEL = [
    name
    for name in CASES
    if not name.startswith(("factory", "weight map", "convert with", "port", "absent", "convert a"))
]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(ROOT))
    _prepare(tmp_path)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    yield tmp_path
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before, "wrote"


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_and_exit_2(case, workdir, monkeypatch, capsys):
    argv, message = CASES[case]

    def benchmark_must_not_run(*args, **kwargs):
        raise AssertionError("the benchmark ran before its output path was checked")

    monkeypatch.setattr("parity.frontends.bench.run", benchmark_must_not_run)
    status, out, err = run_cli(argv, capsys)
    assert status == 2, err + out
    assert message in err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err + out
    assert "tensor" not in out  # no check ran


def test_a_port_module_whose_import_never_ends_is_stopped(monkeypatch, capsys):
    monkeypatch.setattr("parity.backends.ports.IMPORT_SECONDS", 1)
    status, out, err = run_cli(["check", "pam", "--port", "tests.bad_input_hangs:make"], capsys)
    assert (status, len(err.strip().splitlines())) == (2, 1), err
    assert "took more than 1 s and was stopped: is it a script" in err
    assert "Traceback" not in err + out


@pytest.mark.parametrize(
    ("backend", "message"),
    [
        ("tensorflw", "KERAS_BACKEND=tensorflw: Keras has no such backend; expected one of"),
        ("openvino", "KERAS_BACKEND=openvino: openvino is not installed here (pip install"),
    ],
)
def test_a_keras_backend_that_cannot_run_is_one_line_and_exit_2(
    backend, message, monkeypatch, capsys
):
    monkeypatch.setenv("KERAS_BACKEND", backend)
    status, out, err = run_cli(["check", "cam", "--example", "2,3,3,1,1.0,0"], capsys)
    assert (status, len(err.strip().splitlines())) == (2, 1), err
    assert message in err and "Traceback" not in err + out


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        ("cam_returning_int32", "output: the port returns int32, not a floating-point type"),
        ("cam_returning_float16", "output: the port returns float16, narrower than float32"),
        ("cam_returning_nan", "elements of the port's result are NaN or infinite"),
    ],
)
def test_outputs_the_policy_cannot_judge_are_named_for_what_they_are(
    factory, message, workdir, capsys
):
    """The port is wrong (exit 1), and the line says how: its outputs' type, or NaN."""
    argv = ["check", "cam", "--port", f"{PORTS}:{factory}", "--examples", "5"]
    status, out, err = run_cli(argv, capsys)
    assert status == 1, err + out
    assert message in out, out
    assert "Traceback" not in err + out


def test_argument_errors_are_answered_before_the_frameworks_are_imported(tmp_path):
    """In a fresh interpreter: every argument-level case, and TensorFlow, Keras and PyTorch
    still not imported afterwards."""
    cases = {name: CASES[name][0] for name in ARGUMENT_LEVEL}
    script = textwrap.dedent(
        f"""
        import contextlib, io, json, sys
        sys.path.insert(0, {str(ROOT)!r})
        from parity.frontends.cli.main import main
        statuses = {{}}
        for name, argv in {cases!r}.items():
            with contextlib.redirect_stderr(io.StringIO()):
                try:
                    statuses[name] = main(argv)
                except SystemExit as exit_info:
                    statuses[name] = exit_info.code
        heavy = sorted(m for m in ("tensorflow", "torch", "keras", "jax") if m in sys.modules)
        print(json.dumps({{"statuses": statuses, "imported": heavy}}))
        """
    )
    # _prepare needs torch for the checkpoint; the argument-level cases only need the files
    (tmp_path / "R").mkdir()
    (tmp_path / "R" / "cam").write_text("a file")
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["imported"] == []
    assert set(answer["statuses"].values()) == {2}, answer


def test_version(capsys):
    status, out, _ = run_cli(["--version"], capsys)
    assert status == 0
    assert out.startswith("parity ")


def test_ctrl_c_in_process_is_one_line_and_130(monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "run_module", interrupted)
    status, _, err = run_cli(["check", "cam", "--examples", "3"], capsys)
    assert status == 130
    assert err.strip() == "parity: interrupted"


def test_ctrl_c_during_a_check_is_one_line_and_130(tmp_path):
    """A real SIGINT, a few seconds into a long check (while TensorFlow imports or examples
    run: either way one line). A Ctrl-C that lands in a garbage-collection callback is
    swallowed by Python; the command notices it at the next example."""
    process = subprocess.Popen(
        [sys.executable, "-m", "parity.frontends.cli.main", "check", "cam", "--examples", "100000"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # As from a terminal: a suite started in the background (nohup, "&") ignores SIGINT,
        # and its children would inherit that.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    time.sleep(6)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err[-2000:]
    assert err.strip() == "parity: interrupted"
    assert list(tmp_path.iterdir()) == []
