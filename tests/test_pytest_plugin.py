"""The pytest plugin from a built wheel, in a repository that knows nothing of this project.

The package is built into a wheel and installed (not editable) into a folder of its own; a
throwaway repository holds a user's port with a layout bug, a faithful one, and a test of
three lines. ``pytest --parity-port my_port:make_pam`` there must run the properties against
the buggy port and fail them with the replay command, print the port, profile and versions
in the header, and pass the faithful port's own test.
"""

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ("pyproject.toml", "README.md", "LICENSE", "parity", "impl_keras", "reference_torch")

# A PAM written as a function, line by line from the PyTorch code: the (B, C, N) reshapes
# are applied to channels-last tensors, so channels and positions are scrambled.
BUGGY_PORT = """
from keras import layers, ops


class Gamma(layers.Layer):
    def build(self, input_shape):
        self.gamma = self.add_weight(shape=(1,), initializer="zeros", name="gamma")

    def call(self, x):
        return self.gamma * x


def make_pam(channels):
    gamma = Gamma(name="gamma")

    def pam(x):
        batch, height, width, c = x.shape
        n = height * width
        q = ops.reshape(layers.Conv2D(c // 8, 1, name="query_conv")(x), (-1, c // 8, n))
        k = ops.reshape(layers.Conv2D(c // 8, 1, name="key_conv")(x), (-1, c // 8, n))
        v = ops.reshape(layers.Conv2D(c, 1, name="value_conv")(x), (-1, c, n))
        energy = ops.matmul(ops.transpose(q, (0, 2, 1)), k)
        attention = ops.softmax(energy, axis=-1)
        out = ops.matmul(v, ops.transpose(attention, (0, 2, 1)))
        return gamma(ops.reshape(out, (-1, height, width, c))) + x

    return pam
"""

FAITHFUL_PORT = """
import keras
from keras import layers, ops


class PositionAttention(layers.Layer):
    def build(self, input_shape):
        channels = input_shape[-1]
        self.query = layers.Conv2D(channels // 8, 1)
        self.key = layers.Conv2D(channels // 8, 1)
        self.value = layers.Conv2D(channels, 1)
        for conv in (self.query, self.key, self.value):
            conv.build(input_shape)
        self.gamma = self.add_weight(shape=(1,), initializer="zeros", name="gamma")

    def call(self, x):
        shape = ops.shape(x)
        flat = lambda t: ops.reshape(t, (shape[0], shape[1] * shape[2], -1))
        attention = ops.softmax(ops.einsum("bnd,bmd->bnm", flat(self.query(x)), flat(self.key(x))))
        out = ops.einsum("bnm,bmc->bnc", attention, flat(self.value(x)))
        return self.gamma * ops.reshape(out, shape) + x


def make_pam(channels):
    return PositionAttention()
"""

THREE_LINE_TEST = """
from parity import check_port


def test_our_pam_matches_danet():
    check_port("good_port:make_pam", examples=5)
"""


def _run(argv, **kwargs):
    result = subprocess.run(argv, capture_output=True, text=True, timeout=300, **kwargs)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return result


def _install_wheel(tmp_path: Path) -> Path:
    """Build the wheel from a copy of the sources (the checkout stays clean) and install it,
    without dependencies or an index, into a folder of its own."""
    source = tmp_path / "source"
    for name in SHIPPED:
        if (ROOT / name).is_dir():
            ignore = shutil.ignore_patterns("__pycache__")
            shutil.copytree(ROOT / name, source / name, ignore=ignore)
        else:
            source.mkdir(exist_ok=True)
            shutil.copy(ROOT / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", "-q"]
    build = ["wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", "dist", "./source"]
    _run([*pip, *build], cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("danet_parity-*.whl")
    site = tmp_path / "site"
    _run([*pip, "install", "--no-deps", "--no-index", "--target", str(site), str(wheel)])
    return site


def test_plugin_runs_the_properties_against_a_port_from_an_installed_wheel(tmp_path):
    site = _install_wheel(tmp_path)
    repo = tmp_path / "their_repo"
    (repo / "tests").mkdir(parents=True)
    (repo / "my_port.py").write_text(textwrap.dedent(BUGGY_PORT))
    (repo / "good_port.py").write_text(textwrap.dedent(FAITHFUL_PORT))
    (repo / "tests" / "test_our_port.py").write_text(textwrap.dedent(THREE_LINE_TEST))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DANET_PARITY", "PYTHON"))}
    env |= {"PYTHONPATH": str(site), "CI": "", "PYTHONDONTWRITEBYTECODE": "1"}

    where = _run(
        [
            sys.executable,
            "-c",
            "import parity, importlib.metadata as m; print(parity.__file__); "
            "print([e.value for e in m.entry_points(group='pytest11')])",
        ],
        cwd=repo,
        env=env,
    ).stdout
    assert where.startswith(str(site)), where  # the wheel, not this checkout
    assert "parity.frontends.pytest.plugin" in where

    result = subprocess.run(
        [
            *(sys.executable, "-m", "pytest", "-p", "no:cacheprovider"),
            *("--parity-port", "my_port:make_pam", "--parity-examples", "5"),
        ],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = result.stdout
    assert result.returncode == 1, out[-3000:] + result.stderr[-2000:]
    assert "port under test: my_port:make_pam" in out
    assert "5 examples per property" in out and "torch " in out and "keras " in out
    assert "2 failed, 1 passed" in out
    for prop in ("outputs", "gradients"):
        assert f"FAILED my_port:make_pam::test_{prop}_match_reference[pam]" in out, out[-3000:]
    assert "danet-parity: check_port checked good_port:make_pam (pam)" in out, out[-3000:]
    assert "Replay: parity check pam --port my_port:make_pam --example " in out
