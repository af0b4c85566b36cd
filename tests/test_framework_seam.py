"""The house keeps its layers: the folders of ``parity/`` are its layers, every import runs
down them (core <- backends <- run <- diagnosis <- frontends; the pairs on core), no module
imports itself back through others, and only ``parity/backends/`` imports a framework. Inside
the backends, the engine reaches Keras only through the protocol, each implementation offers
every operation of it, and PyTorch is imported on the reference's side only.

Read from the code's own imports (at any depth, inside functions too; ``if TYPE_CHECKING:``
blocks, which never run, aside), so that the layering stays true as the code changes.
"""

import ast
import importlib.util
import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest

from parity.backends.protocol import IMPLEMENTATIONS, Framework, Reference

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("core", "backends", "run", "diagnosis", "frontends")
"""Lowest first: a module imports from its own layer and the ones before it."""
FRAMEWORKS = ("tensorflow", "jax", "jaxlib", "keras", "tf_keras", "torch")
MODEL_CODE = ("impl_keras", "reference_torch")
PAIRS_MAY_IMPORT = {
    "parity.backends.torch.variants": "a pair's bug hypotheses are its reference rewritten, "
    "in PyTorch (imported inside functions only)",
}
"""What a pair file imports besides ``parity.core`` (and the frameworks inside its factories)."""


def _implementation_files() -> dict[str, str]:
    """The protocol's implementations (``IMPLEMENTATIONS``) as files, each with the folder
    it lives in where that folder is its own (``parity/backends/keras/``): the modules that
    may import Keras, TensorFlow or JAX."""
    files = {}
    for name, module in IMPLEMENTATIONS.items():
        path = module.replace(".", "/") + ".py"
        folder = path.rpartition("/")[0] + "/"
        files[folder if folder != "parity/backends/" else path] = name
    return files


KERAS_IMPLEMENTATIONS = _implementation_files()
KERAS_ALSO = {
    "parity/backends/timing.py": "measures the machine's matmul throughput in TensorFlow itself",
    "parity/backends/nobuco.py": "a converter's output as a port: the reference made tf.keras",
}
REFERENCE_SIDE = {
    "parity/backends/torch/": "the reference, its instruments, its hypotheses and checkpoints",
    "parity/backends/timing.py": "times the reference itself",
    "parity/backends/which_keras.py": "strict_float32 turns PyTorch's TF32 switches off",
    "parity/backends/keras/autodiff.py": "Keras' torch backend: the port's autodiff",
    "parity/backends/nobuco.py": "converts the PyTorch reference with nobuco",
}
"""Files (or a folder) of the backends that may import PyTorch."""


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, root: Path = ROOT) -> list[tuple[str, bool]]:
    """``(module, inside a function)`` for every import of ``path``, relative ones resolved,
    ``importlib.import_module("...")`` with a literal name included."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []

    def walk(node, nested):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and ast.unparse(child.test).endswith("TYPE_CHECKING"):
                continue
            inner = nested or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.Import):
                found.extend((alias.name, inner) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    parts = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join(parts + ([child.module] if child.module else []))
                found.append((base, inner))
                found.extend((f"{base}.{alias.name}", inner) for alias in child.names)
            elif (
                isinstance(child, ast.Call)
                and getattr(child.func, "attr", getattr(child.func, "id", None))
                in ("import_module", "__import__")
                and child.args
                and isinstance(child.args[0], ast.Constant)
                and isinstance(child.args[0].value, str)
            ):
                found.append((child.args[0].value, inner))
            walk(child, inner)

    walk(ast.parse(path.read_text(encoding="utf-8")), False)
    return found


def import_graph(root: Path = ROOT) -> dict[str, set[tuple[str, bool]]]:
    """Each module of ``root/parity`` -> the modules of the tree and the outside packages
    (their first name) it imports."""
    modules = {module_name(p, root): p for p in (root / "parity").rglob("*.py")}

    def owner(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for name, path in modules.items():
        edges = set()
        for imported, nested in imports(path, root):
            if imported.split(".")[0] == "parity":
                target = owner(imported)
                if target not in (None, name, "parity"):
                    edges.add((target, nested))
            else:
                edges.add((imported.split(".")[0], nested))
        graph[name] = edges
    return graph


def layer(module: str) -> str:
    """``core``, ``backends``, ..., ``pairs``, or ``parity`` (the package's own files)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] != "__main__" else "parity"


def upward_imports(graph) -> list[str]:
    """Every import that runs back up a layer, into the pairs, or out of the pairs past core."""
    found = []
    for module, edges in sorted(graph.items()):
        own = layer(module)
        for target, _nested in sorted(edges):
            if target.split(".")[0] != "parity":
                continue
            theirs = layer(target)
            if own == "pairs":
                wrong = theirs not in ("core", "pairs") and target not in PAIRS_MAY_IMPORT
            elif own in LAYERS:
                wrong = theirs == "pairs" or (
                    theirs in LAYERS and LAYERS.index(theirs) > LAYERS.index(own)
                )
            else:
                wrong = False
            if wrong:
                found.append(f"{module} -> {target}")
    return found


def circles(graph) -> list[list[str]]:
    """The import circles among the tree's modules (Tarjan's strongly connected components)."""
    edges = {m: sorted({t for t, _ in e if t in graph}) for m, e in graph.items()}
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def framework_imports(graph) -> list[str]:
    """Framework and model-code imports outside ``parity/backends/`` (a pair's own factories,
    inside functions, aside)."""
    return [
        f"{module} -> {target}"
        for module, edges in sorted(graph.items())
        for target, nested in sorted(edges)
        if target in FRAMEWORKS + MODEL_CODE
        and layer(module) != "backends"
        and not (layer(module) == "pairs" and nested)
    ]


def test_the_folders_are_the_layers():
    """``parity/`` holds its layers, the pairs, and its entry points (the public names and
    ``python -m parity``), nothing else; each layer says in its docstring what it imports."""
    top = sorted(p.name for p in (ROOT / "parity").iterdir() if not p.name.startswith("__py"))
    assert top == sorted(["__init__.py", "__main__.py", "pairs", *LAYERS])
    for name in LAYERS:
        docstring = ast.get_docstring(
            ast.parse((ROOT / "parity" / name / "__init__.py").read_text())
        )
        assert docstring and "imports" in docstring.lower(), name


def test_no_import_runs_back_up_a_layer():
    assert upward_imports(import_graph()) == []


def test_there_are_no_import_circles():
    assert circles(import_graph()) == []


def test_only_the_backends_import_a_framework():
    assert framework_imports(import_graph()) == []


def test_the_layering_checks_can_fail(tmp_path):
    """Planted: a core module importing the engine, a circle of two backends, a frontend
    importing TensorFlow, a pair importing the diagnosis. Each check names its own."""
    files = {
        "parity/__init__.py": "",
        "parity/core/__init__.py": "",
        "parity/core/policy.py": "def judge():\n    from parity.run.engine import Checker\n",
        "parity/backends/__init__.py": "",
        "parity/backends/a.py": "from parity.backends import b\n",
        "parity/backends/b.py": "from parity.backends.a import x\n",
        "parity/run/__init__.py": "",
        "parity/run/engine.py": "from parity.core import policy\n",
        "parity/frontends/__init__.py": "",
        "parity/frontends/bench.py": "import tensorflow as tf\n",
        "parity/diagnosis/__init__.py": "",
        "parity/diagnosis/trials.py": "",
        "parity/pairs/__init__.py": "",
        "parity/pairs/pam.py": "from parity.diagnosis.trials import Trials\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    graph = import_graph(tmp_path)
    assert upward_imports(graph) == [
        "parity.core.policy -> parity.run.engine",
        "parity.pairs.pam -> parity.diagnosis.trials",
    ]
    assert sorted(circles(graph)) == [
        ["parity.backends.a", "parity.backends.b"],
        ["parity.core.policy", "parity.run.engine"],
    ]
    assert framework_imports(graph) == ["parity.frontends.bench -> tensorflow"]


def _relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _backends() -> list[Path]:
    return sorted((ROOT / "parity" / "backends").rglob("*.py"))


def _named(path: Path) -> set[str]:
    return {name for name, _nested in imports(path)}


def _within(relative: str, listed) -> bool:
    """``relative`` is a listed file, or lies in a listed folder (``.../``)."""
    return any(relative == p or (p.endswith("/") and relative.startswith(p)) for p in listed)


def test_inside_the_backends_only_the_implementations_import_keras():
    allowed = {**KERAS_IMPLEMENTATIONS, **KERAS_ALSO}
    offenders = {
        _relative(path): sorted(
            n for n in _named(path) if n.split(".")[0] in FRAMEWORKS and n.split(".")[0] != "torch"
        )
        for path in _backends()
        if not _within(_relative(path), allowed)
    }
    assert {m: names for m, names in offenders.items() if names} == {}


def test_the_engine_reaches_the_implementations_only_through_the_protocol():
    """Nothing outside an implementation imports one: ``port_framework()`` picks it."""

    def implementation(name: str) -> bool:
        as_path = name.replace(".", "/")
        return any(_within(f"{as_path}{end}", KERAS_IMPLEMENTATIONS) for end in (".py", "/"))

    offenders = {
        _relative(path): sorted(n for n in _named(path) if implementation(n))
        for path in (ROOT / "parity").rglob("*.py")
        if not _within(_relative(path), KERAS_IMPLEMENTATIONS)
    }
    assert {m: names for m, names in offenders.items() if names} == {}


def test_inside_the_backends_only_the_reference_side_imports_pytorch():
    def allowed(relative: str) -> bool:
        return any(
            relative == p or (p.endswith("/") and relative.startswith(p)) for p in REFERENCE_SIDE
        )

    offenders = {
        _relative(path): sorted(n for n in _named(path) if n.split(".")[0] == "torch")
        for path in _backends()
        if not allowed(_relative(path))
    }
    assert {m: names for m, names in offenders.items() if names} == {}


def test_every_listed_module_exists():
    """An allowance outlives no module (a renamed one would otherwise pass unchecked)."""
    listed = {**KERAS_IMPLEMENTATIONS, **KERAS_ALSO, **REFERENCE_SIDE}
    assert [p for p in listed if not (ROOT / p).exists()] == []
    assert [m for m in PAIRS_MAY_IMPORT if m not in import_graph()] == []


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
    from parity.backends.keras.framework import FRAMEWORK

    assert _missing(FRAMEWORK) == []
    assert isinstance(FRAMEWORK, Framework)
    assert FRAMEWORK.modes[0] == "eager"


def test_tf_keras_2_implements_the_protocol():
    """In a process of its own, in legacy mode, as ``parity check --keras 2`` runs it."""
    script = (
        "from parity.backends.protocol import port_framework\n"
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
    from parity.backends.torch.reference import TorchReference

    members = [n for n, v in vars(Reference).items() if inspect.isfunction(v) and n[0] != "_"]
    assert len(members) >= 9
    assert [n for n in members if not callable(getattr(TorchReference, n, None))] == []
