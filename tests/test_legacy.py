"""Ports written for tf.keras 2, checked end to end through ``parity check``.

tf.keras 2 must be selected before TensorFlow is imported, so each check runs in a fresh
process; ``parity`` detects the legacy port from its source and sets TF_USE_LEGACY_KERAS.
Needs the tf-keras package (``pip install --no-deps tf-keras==2.21.0``; CI installs it).
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("tf_keras", reason="tf-keras is not installed (pip install --no-deps tf-keras)")

ROOT = Path(__file__).resolve().parents[1]
LEGACY = "tests.power.legacy_ports"


def parity(*args):
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "parity.frontends.cli.main", "check", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )


def test_faithful_legacy_layer_passes():
    result = parity("pam", "--port", f"{LEGACY}:PAMLegacy", "--examples", "15")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "pam: pass" in result.stdout


def test_faithful_legacy_function_with_lambda_layers_passes():
    result = parity("cam", "--port", f"{LEGACY}:cam_legacy_function", "--examples", "15")
    assert result.returncode == 0, result.stdout + result.stderr


def test_buggy_legacy_port_is_rejected_with_its_diagnosis():
    result = parity("pam", "--port", f"{LEGACY}:PAMLegacySoftmaxWrongAxis", "--examples", "15")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "the softmax normalises over the query positions" in result.stdout


def test_legacy_mode_can_be_asked_for_by_flag():
    result = parity(
        "pam", "--port", f"{LEGACY}:PAMLegacy", "--legacy-keras", "--example", "2,16,3,5,0.5,1"
    )
    assert result.returncode == 0, result.stdout + result.stderr
