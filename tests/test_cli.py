"""The ``parity`` command, run as a user runs it."""

import os
import subprocess
import sys

import pytest
import torch

from parity.backends.which_keras import strict_float32
from parity.core.strategies import Example
from parity.frontends.cli import arguments
from parity.frontends.cli import main as cli
from parity.frontends.cli.main import main


def exit_status(argv) -> int:
    """main()'s status, whether it returns it or argparse exits with it."""
    try:
        return main(argv)
    except SystemExit as exit_info:
        return exit_info.code


def test_check_prints_a_table_per_module_and_passes(capsys):
    assert main(["check", "pam", "cam", "--examples", "5"]) == 0
    out = capsys.readouterr().out
    for module in ("pam", "cam"):
        assert f"{module}: 5 examples passed" in out
        assert f"{module}: pass" in out
    assert "grad[query_conv.weight]" in out and "grad[gamma]" in out


def test_replaying_one_example(capsys):
    assert main(["check", "cam", "--example", "2,17,3,1,0.05,7"]) == 0
    assert "cam: 1 example passed" in capsys.readouterr().out


def test_no_tf32_is_set_before_the_check_and_kept_in_the_replay(monkeypatch, capsys):
    """``--no-tf32`` switches TF32 off before Keras is imported, and a failure's replay line
    says so (without it, a GPU replays with TF32 on: another computation)."""
    calls = []
    monkeypatch.setattr(cli, "strict_float32", lambda: calls.append("before keras"))
    assert main(["check", "cam", "--example", "2,3,3,1,1.0,0", "--no-tf32"]) == 0
    assert calls == ["before keras"]
    args = arguments.build_parser().parse_args(
        ["check", "danet", "--variant", "resnet50", "--no-tf32"]
    )
    replay = cli.replay_command(args, "danet", Example(1, 3, 17, 11, 1.0, 0))
    flags = "--variant resnet50 --no-tf32 --example 1,3,17,11,1.0,0"
    assert replay.endswith(f"parity check danet {flags}")


def test_the_factor_sets_the_policy_and_is_kept_in_the_replay_and_the_report(tmp_path, capsys):
    """``--factor`` is the policy the verdict used: a factor far below what float32 errs
    fails the faithful CAM, its table says the factor, its replay repeats it, and the
    report records the whole policy."""
    import json

    assert (
        main(["check", "cam", "--examples", "3", "--factor", "1e-3", "--report", str(tmp_path)])
        == 1
    )
    out = capsys.readouterr().out
    assert "at most 0.001x the reference's own" in out
    assert "--factor 0.001 --example " in out
    report = json.loads((tmp_path / "cam" / "report.json").read_text())
    assert report["policy"]["factor"] == 1e-3 and report["policy"]["unit"] > 0
    assert main(["check", "cam", "--examples", "3", "--factor", "16"]) == 0


def test_strict_float32_sets_every_switch(monkeypatch):
    monkeypatch.setenv("NVIDIA_TF32_OVERRIDE", "1")
    monkeypatch.delenv("JAX_DEFAULT_MATMUL_PRECISION", raising=False)
    monkeypatch.delitem(sys.modules, "jax", raising=False)  # this process' JAX left as it is
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
    try:
        strict_float32()
        assert not torch.backends.cudnn.allow_tf32
        assert not torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
    assert os.environ["NVIDIA_TF32_OVERRIDE"] == "0"
    assert os.environ["JAX_DEFAULT_MATMUL_PRECISION"] == "highest"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["check", "sam"], "unknown module 'sam'"),
        (["check", "--examples", "0"], "must be at least 1, got 0"),
        (["check", "--example", "1,2"], "Expected 6 comma-separated values"),
        (["bench", "--shape", "1,2,3"], "expected B,C,H,W: four positive whole numbers"),
        (["bench", "pam", "--shape", "1,4,3,3"], "pam needs at least 8 channels, got 4"),
        (["bench", "mam"], "unknown module 'mam'"),
        (["check", "cam", "--factor", "0"], "must be a positive finite number, got '0'"),
        (["check", "cam", "--factor", "x"], "expected a number, got 'x'"),
    ],
)
def test_bad_arguments_exit_2_with_one_clear_line(argv, message, capsys):
    assert exit_status(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_an_unknown_framework_name_is_one_line_and_exit_2(monkeypatch, capsys):
    monkeypatch.setenv("DANET_PARITY_FRAMEWORK", "flax")
    assert exit_status(["check", "cam", "--example", "2,3,3,1,1.0,0"]) == 2
    err = capsys.readouterr().err
    assert "DANET_PARITY_FRAMEWORK=flax: expected one of ['keras', 'tf_keras']" in err
    assert "Traceback" not in err


def test_console_script_is_installed():
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from importlib.metadata import entry_points; "
            "print([e.value for e in entry_points(group='console_scripts', name='parity')])",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "parity.frontends.cli.main:run" in result.stdout
