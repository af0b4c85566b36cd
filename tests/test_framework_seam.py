"""The framework seams hold: only the implementations of ``parity.framework`` import Keras,
TensorFlow or JAX, the engine reaches them only through ``port_framework()``, each
implementation offers every operation of the protocol, and PyTorch is imported only on the
reference's side (``parity.torch_reference`` and the reference's own instruments)."""

import ast
import importlib.util
import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest

from parity.framework import Framework, Reference

ROOT = Path(__file__).resolve().parents[1]
FRAMEWORKS = ("tensorflow", "jax", "jaxlib", "keras", "tf_keras")

IMPLEMENTATIONS = {
    "parity/keras_framework.py": "Keras 3, every backend",
    "parity/keras_build.py": "Keras 3: building a port, recording its weights",
    "parity/keras_autodiff.py": "Keras 3: forward, vjp and training step per backend",
    "parity/tf_keras_framework.py": "tf.keras 2",
}
ALSO_ALLOWED = {
    "parity/bench.py": "measures the machine's matmul throughput in each framework itself",
    "parity/pairs/cbam.py": "its Keras 3 port is model code under test, not engine computation",
}


def _modules() -> list[Path]:
    return sorted([*ROOT.glob("parity/*.py"), *ROOT.glob("parity/pairs/*.py")])


def _imported(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth (inside functions too), also through
    ``importlib.import_module("...")`` with a literal name."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None))
            in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names.add(node.args[0].value)
    return names


def _relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def test_only_the_framework_implementations_import_a_framework():
    offenders = {
        _relative(path): sorted(n for n in _imported(path) if n.split(".")[0] in FRAMEWORKS)
        for path in _modules()
        if _relative(path) not in {**IMPLEMENTATIONS, **ALSO_ALLOWED}
    }
    assert {m: names for m, names in offenders.items() if names} == {}


def test_the_engine_reaches_the_implementations_only_through_the_protocol():
    implementations = {p.removesuffix(".py").replace("/", ".") for p in IMPLEMENTATIONS}
    offenders = {
        _relative(path): sorted(_imported(path) & implementations)
        for path in _modules()
        if _relative(path) not in IMPLEMENTATIONS
    }
    assert {m: names for m, names in offenders.items() if names} == {}


REFERENCE_SIDE = {
    "parity/torch_reference.py": "the reference's seam: build, load, run, train, record",
    "parity/rounding.py": "instruments the reference's arithmetic (simulated rounding)",
    "parity/error_bound.py": "instruments the reference's arithmetic (running error bound)",
    "parity/variants.py": "hypotheses: the reference with a known bug, written in PyTorch",
    "parity/traps.py": "hypotheses: a module's known trap, predicted in PyTorch",
    "parity/checkpoint.py": "reads .pth checkpoints (weights_only=True)",
    "parity/bench.py": "times the reference itself",
    "parity/frameworks.py": "strict_float32 turns PyTorch's TF32 switches off",
    "parity/keras_autodiff.py": "Keras' torch backend: the port's autodiff, not the reference",
}
"""Modules that may import PyTorch; the pairs' files hold the reference models themselves."""


def test_only_the_reference_side_imports_pytorch():
    offenders = {
        _relative(path): sorted(n for n in _imported(path) if n.split(".")[0] == "torch")
        for path in ROOT.glob("parity/*.py")
        if _relative(path) not in REFERENCE_SIDE
    }
    assert {m: names for m, names in offenders.items() if names} == {}


def test_every_listed_module_exists():
    """An allowance outlives no module (a renamed one would otherwise pass unchecked)."""
    listed = {**IMPLEMENTATIONS, **ALSO_ALLOWED, **REFERENCE_SIDE}
    assert [p for p in listed if not (ROOT / p).exists()] == []


def _protocol_members() -> list[str]:
    methods = [n for n, v in vars(Framework).items() if inspect.isfunction(v) and n[0] != "_"]
    return sorted({*methods, *Framework.__annotations__})


def _missing(framework) -> list[str]:
    return [
        name
        for name in _protocol_members()
        if not hasattr(framework, name)
        or (name not in Framework.__annotations__ and not callable(getattr(framework, name)))
    ]


def test_keras_3_implements_the_protocol():
    from parity.keras_framework import FRAMEWORK

    assert _missing(FRAMEWORK) == []
    assert isinstance(FRAMEWORK, Framework)
    assert FRAMEWORK.modes[0] == "eager"


def test_tf_keras_2_implements_the_protocol():
    """In a process of its own, in legacy mode, as ``parity check --keras 2`` runs it."""
    script = (
        "from parity.framework import port_framework\n"
        "from tests.test_framework_seam import _missing\n"
        "framework = port_framework()\n"
        "print(type(framework).__name__, _missing(framework))\n"
    )
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "KERAS_BACKEND": "tensorflow"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    if importlib.util.find_spec("tf_keras") is None:
        pytest.skip("tf-keras is not installed")
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-2:] == ["TfKerasFramework", "[]"], done.stdout


def test_the_protocol_lists_every_operation_the_issue_names():
    """build, list weights, assign, forward, vector-Jacobian product, train step."""
    assert {"build", "weights", "assign", "forward", "vjp", "train_step"} <= set(
        _protocol_members()
    )


def test_the_pytorch_reference_implements_its_protocol():
    from parity.torch_reference import TorchReference

    members = [n for n, v in vars(Reference).items() if inspect.isfunction(v) and n[0] != "_"]
    assert len(members) >= 9
    assert [n for n in members if not callable(getattr(TorchReference, n, None))] == []
