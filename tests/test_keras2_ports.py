"""Ports written for standalone Keras 2 run as they are, under tf.keras 2 with ``keras``
resolved to it, detected from their source with no flags, from the installed ``parity``
script too (its folder, not the working directory, is first on sys.path).

tf.keras 2 must be selected before TensorFlow is imported, so these checks run in fresh
processes.
"""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from parity.backends.which_keras import uses_keras2_api, uses_tf_keras
from tests.helpers import run_cli as run

ROOT = Path(__file__).resolve().parents[1]
KERAS2 = "tests.power.keras2_ports"


def parity(*args, cwd=ROOT, script=None):
    """``parity check ARGS`` in a fresh process: ``python -m parity.frontends.cli.main``, or
    ``script`` (a stand-in for the installed entry point) run from its own folder."""
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    env["PYTHONPATH"] = str(ROOT)
    command = (
        [sys.executable, str(script)]
        if script
        else [sys.executable, "-m", "parity.frontends.cli.main"]
    )
    return subprocess.run(
        [*command, "check", *args], cwd=cwd, capture_output=True, text=True, timeout=600, env=env
    )


@pytest.mark.parametrize(
    ("source", "keras2"),
    [
        ("import keras.backend as K\ny = K.reshape(x, (2, -1))", True),
        ("from keras import backend as K\ny = K.batch_dot(a, b)", True),
        ("import keras\ny = keras.backend.permute_dimensions(x, (0, 2, 1))", True),
        ("from keras.engine.topology import Layer", True),
        ("from keras.backend import batch_dot", True),
        ("import keras\nfrom keras import layers, ops\ne = keras.backend.epsilon()", False),
        ("from keras.layers import Conv2D, Layer\nimport keras.backend as K\nK.floatx()", False),
    ],
)
def test_keras2_code_is_told_from_keras3_code(source, keras2):
    assert uses_keras2_api(source) is keras2


@pytest.mark.parametrize(
    ("source", "tf_keras"),
    [
        ("import tensorflow as tf\nconv = tf.keras.layers.Conv2D(8, 1)", True),
        ("from tensorflow import keras\nconv = keras.layers.Conv2D(8, 1)", True),
        ("from tensorflow.keras.layers import Layer", True),
        ("import keras\n# ported from a tf.keras version\nconv = keras.layers.Conv2D(8, 1)", False),
        ('"""Unlike tf.keras, Keras 3 ..."""\nimport keras', False),
    ],
)
def test_tf_keras_code_is_told_from_a_mention_of_it(source, tf_keras):
    assert uses_tf_keras(source) is tf_keras


@pytest.mark.skipif(importlib.util.find_spec("tf_keras") is None, reason="needs tf-keras")
def test_faithful_keras2_port_passes_from_the_installed_script(tmp_path):
    """The port's folder is the working directory, not on PYTHONPATH, and the command runs
    as a script from another folder; the factory's module imports the Keras 2 layer from a
    package of the user's (the usual split: a layers module, a model module) and holds no
    Keras 2 code itself: detection reads the modules it imports all the same."""
    (tmp_path / "nets").mkdir()
    (tmp_path / "nets" / "__init__.py").write_text("")
    (tmp_path / "nets" / "attention.py").write_text(
        (ROOT / "tests/power/keras2_ports.py").read_text()
    )
    (tmp_path / "my_danet.py").write_text(
        "from nets.attention import PAM_Module\n\n\ndef make_pam(channels):\n"
        "    return PAM_Module(channels)\n"
    )
    script = tmp_path / "bin" / "parity"
    script.parent.mkdir()
    script.write_text("import sys\nfrom parity.frontends.cli.main import main\nsys.exit(main())\n")
    result = parity(
        "pam", "--port", "my_danet:make_pam", "--examples", "6", cwd=tmp_path, script=script
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "pam: pass" in result.stdout
    assert "Traceback" not in result.stderr and "Warning" not in result.stderr, result.stderr


@pytest.mark.skipif(importlib.util.find_spec("tf_keras") is None, reason="needs tf-keras")
def test_keras2_compound_cam_bug_is_named_and_replays():
    result = parity("cam", "--port", f"{KERAS2}:CAM_Module", "--examples", "6")
    assert result.returncode == 1, result.stdout + result.stderr
    diagnosis = next(line for line in result.stdout.splitlines() if line.startswith("Diagnosis:"))
    assert "two bugs at once: the attention matrix is applied transposed" in diagnosis
    assert "the max-minus step is missing" in diagnosis
    replay = next(line for line in result.stdout.splitlines() if line.startswith("Replay: "))
    replayed = parity(*replay.removeprefix("Replay: parity check ").split())
    assert replayed.returncode == 1, replayed.stdout
    assert diagnosis in replayed.stdout


def test_keras2_port_without_tf_keras_is_exit_2_with_the_install_command(monkeypatch, capsys):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *args: None if name == "tf_keras" else find_spec(name, *args),
    )
    status, out, err = run(["check", "pam", "--port", f"{KERAS2}:PAM_Module"], capsys)
    assert status == 2, out + err
    assert "the port is written for Keras 2" in err
    assert "pip install --no-deps tf-keras~=2.21.0" in err
    assert "Traceback" not in err


@pytest.mark.skipif(importlib.util.find_spec("tf_keras") is None, reason="needs tf-keras")
def test_a_port_that_fails_under_keras_3_as_keras_2_code_does_is_run_under_tf_keras():
    """Keras 3 refuses TensorFlow ops on its symbolic tensors at trace time: that is the
    wrong Keras, not a wrong port. With no flags the command says so and checks the port
    under tf.keras 2, where it passes; the replay line asks for Keras 2 itself."""
    port = "tests.power.tf_ops_ports:cam_tf_ops_function"
    result = parity("cam", "--port", port, "--examples", "6")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith(
        "Note: the port fails under Keras 3 the way Keras 2 code does (KerasTensor cannot be "
        "used as input to a TensorFlow function): checked under tf.keras 2"
    ), result.stdout
    assert "cam: pass" in result.stdout and "Traceback" not in result.stderr


def test_a_keras2_failure_without_tf_keras_is_exit_2_with_the_install_command(monkeypatch, capsys):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *args: None if name == "tf_keras" else find_spec(name, *args),
    )
    port = "tests.power.tf_ops_ports:cam_tf_ops_function"
    status, out, err = run(["check", "cam", "--port", port], capsys)
    assert status == 2, out + err
    assert "fails under Keras 3 the way Keras 2 code does" in err
    assert "pip install --no-deps tf-keras~=" in err and len(err.strip().splitlines()) == 1


@pytest.mark.skipif(importlib.util.find_spec("tf_keras") is None, reason="needs tf-keras")
def test_keras_2_can_be_forced_and_a_function_port_with_a_static_batch_passes():
    port = "tests.power.tf_ops_ports:cam_tf_ops_function"
    result = parity("cam", "--port", port, "--keras", "2", "--examples", "6")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Warning" not in result.stderr, result.stderr


@pytest.mark.skipif(importlib.util.find_spec("tf_keras") is None, reason="needs tf-keras")
def test_a_tf_keras_port_written_for_keras_3_is_checked_under_keras_3():
    """``from tensorflow import keras`` with ``keras.ops``: sent to tf.keras 2 by its import,
    where it cannot be built, and checked under Keras 3 instead (what TensorFlow 2.16 and
    later hand out as tf.keras), with a note."""
    done = parity("pam", "--port", "tests.power.tf_keras3_ports:PAM", "--example", "2,8,3,5,1.0,0")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Note: the port uses tf.keras and cannot be built under tf.keras 2" in done.stdout
    assert "pam: pass" in done.stdout


@pytest.mark.skipif(importlib.util.find_spec("tf_keras") is None, reason="needs tf-keras")
@pytest.mark.skipif(
    importlib.util.find_spec("onnxruntime") is None, reason="the export extra is not installed"
)
def test_a_keras2_port_is_checked_as_the_file_it_ships_as():
    """Exported by TensorFlow's own tools as Model.export exports Keras 3: the faithful PAM
    passes as TFLite; the compound-bug CAM fails as ONNX, named, and located at the file's
    own Softmax."""
    port = f"{KERAS2}:PAM_Module"
    result = parity("pam", "--port", port, "--export", "tflite", "--examples", "3")
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    assert "pam: pass" in result.stdout and "tflite: outputs only" in result.stdout
    result = parity("cam", "--port", f"{KERAS2}:CAM_Module", "--export", "onnx", "--examples", "6")
    assert result.returncode == 1, result.stdout + result.stderr[-2000:]
    assert "two bugs at once" in result.stdout, result.stdout
    assert "look at the port's Softmax" in result.stdout, result.stdout
