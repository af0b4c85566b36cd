"""Keras 3, and the legacy tf.keras 2 that ports written for TensorFlow 2.6-2.15 use.

tf.keras 2 lives on as the ``tf-keras`` package, and TensorFlow hands it out as ``tf.keras``
only when ``TF_USE_LEGACY_KERAS=1`` is set before TensorFlow is imported. Its layers are not
Keras 3 layers, and its weights are plain ``tf.Variable`` s named without their layer. The
helpers here decide which one a port needs and make ``import keras`` give it tf.keras 2;
they import neither (the command decides on legacy mode before TensorFlow loads). Each
is run by its implementation of ``parity.backends.protocol``.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import importlib.abc
import importlib.util
import os
import re
import sys
from pathlib import Path

# No module-level import of Keras or TensorFlow: the command decides on legacy mode first.

LEGACY_ENV = "TF_USE_LEGACY_KERAS"

KERAS3_BACKEND = frozenset(
    {
        "backend",
        "clear_session",
        "epsilon",
        "floatx",
        "get_uid",
        "image_data_format",
        "is_float_dtype",
        "is_int_dtype",
        "is_keras_tensor",
        "result_type",
        "set_epsilon",
        "set_floatx",
        "set_image_data_format",
        "standardize_dtype",
    }
)
"""What ``keras.backend`` still offers in Keras 3 (3.15); Keras 2 code calls the rest
(``K.reshape``, ``K.batch_dot``, ``K.permute_dimensions``, ...)."""

KERAS2_MODULES = ("keras.engine", "keras.layers.core", "keras.layers.merge", "keras.utils.np_utils")
"""Standalone Keras 2 module paths that Keras 3 does not have."""


KERAS_BACKENDS = {
    "tensorflow": "tensorflow-cpu",
    "jax": "jax",
    "torch": "torch",
    "numpy": "numpy",
    "openvino": "openvino",
}
"""Keras 3's backends, and the package each needs (what to install when it is missing)."""


def keras_backend_problem() -> str:
    """What is wrong with ``KERAS_BACKEND`` ("" if nothing): a name Keras does not know, or
    a backend whose package is not installed. Read before Keras is imported (Keras raises a
    traceback at import time otherwise)."""
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    if backend not in KERAS_BACKENDS:
        known = sorted(KERAS_BACKENDS)
        return f"KERAS_BACKEND={backend}: Keras has no such backend; expected one of {known}"
    if importlib.util.find_spec(backend) is None:
        return (
            f"KERAS_BACKEND={backend}: {backend} is not installed here "
            f"(pip install {KERAS_BACKENDS[backend]})"
        )
    return ""


KERAS2_SIGNS = re.compile(
    r"module 'keras(?:\.src)?\.backend' has no attribute '\w+'"
    r"|No module named 'keras\.(?:engine|layers\.core|layers\.merge|utils\.np_utils)[\w.]*'"
    r"|'KerasTensor' object has no attribute 'get_shape'"
    r"|KerasTensor cannot be used as input to a TensorFlow function"
)
"""What Keras 3 raises on Keras 2 code: a removed ``keras.backend`` function, a Keras 2
module path, ``tensor.get_shape()``, TensorFlow ops applied to symbolic Keras tensors."""


def keras2_sign(error: BaseException) -> str | None:
    """The part of ``error`` (or of an error it was raised from) that Keras 2 code raises
    under Keras 3, or None."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        found = KERAS2_SIGNS.search(str(error))
        if found:
            return found.group(0)
        error = error.__cause__ or error.__context__
    return None


def legacy_keras_enabled() -> bool:
    return os.environ.get(LEGACY_ENV, "").lower() in ("1", "true", "yes")


def numpy_dtype(variable):
    dtype = variable.dtype
    return getattr(dtype, "as_numpy_dtype", dtype)


def working_directory_on_path() -> None:
    """Ports are imported from the working directory, as ``python -m`` would, also when
    ``parity`` runs as an installed script (whose own folder is sys.path[0])."""
    if str(Path.cwd()) not in sys.path and "" not in sys.path:
        sys.path.insert(0, str(Path.cwd()))


def _module_file(name: str, root: Path) -> Path | None:
    """The file of module ``name`` under ``root`` (``a/b.py`` or ``a/b/__init__.py``),
    found without importing anything."""
    base = root.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported_names(tree: ast.AST, package: str) -> set[str]:
    """The modules a module's source imports (relative imports resolved against
    ``package``); for ``from a import b`` both ``a`` and ``a.b``, which may be a module."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".") if package else []
                parts = parts[: len(parts) - node.level + 1] if node.level > 1 else parts
                base = ".".join([*parts, *([node.module] if node.module else [])])
            if base:
                names.add(base)
            names.update(f"{base}.{alias.name}".lstrip(".") for alias in node.names)
    return names


def _installed_packages() -> set[str]:
    """Top-level packages of installed distributions (this tool's own among them): not the
    user's tree, even where they lie in the working directory (an editable install)."""
    from importlib.metadata import packages_distributions

    return set(packages_distributions())


def port_sources(target: str) -> dict[str, str]:
    """The sources of the module of ``[pam=]MODULE:FACTORY`` and of every module of the
    user's own tree (found under the working directory, installed packages aside) that it
    imports, at any depth: read, not run. A port is often split across files (a layer
    module, a model module that builds it), and which Keras it needs shows in any of them."""
    module = target.partition("=")[-1] if "=" in target.partition(":")[0] else target
    module = module.partition(":")[0]
    if not module or module.endswith(".py") or "/" in module:
        return {}
    root = Path.cwd()
    installed = _installed_packages() - {module.partition(".")[0]}
    sources: dict[str, str] = {}
    pending = [module]
    while pending:
        name = pending.pop()
        path = _module_file(name, root)
        if name in sources or path is None or name.partition(".")[0] in installed:
            continue
        try:
            source = path.read_text(encoding="utf-8")
            tree = ast.parse(source)
        except (OSError, UnicodeDecodeError, SyntaxError):
            continue
        sources[name] = source
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        pending += sorted(_imported_names(tree, package) - set(sources))
    return sources


def uses_tf_keras(source: str) -> bool:
    """Whether code uses tf.keras (``tf.keras.layers``, ``from tensorflow import keras``,
    ``import tensorflow.keras``, ``tf_keras``), in its code, not its comments or strings."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return False
    tf_names = {"tensorflow"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "tensorflow":
                    tf_names.add(alias.asname or "tensorflow")
                if alias.name.startswith(("tensorflow.keras", "tf_keras")):
                    return True
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.startswith(("tensorflow.keras", "tf_keras")):
                return True
            if node.module == "tensorflow" and any(a.name == "keras" for a in node.names):
                return True
    return any(
        isinstance(node, ast.Attribute)
        and node.attr == "keras"
        and isinstance(node.value, ast.Name)
        and node.value.id in tf_names | {"tf"}
        for node in ast.walk(tree)
    )


def uses_keras2_api(source: str) -> bool:
    """Whether code calls standalone Keras 2: ``keras.backend`` functions Keras 3 removed
    (through ``import keras.backend as K``, ``from keras import backend as K`` or
    ``keras.backend.reshape``), or Keras 2's module paths (``keras.engine``)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return False
    backends = set()  # local names bound to keras.backend
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith(KERAS2_MODULES):
                    return True
                if alias.name == "keras.backend" and alias.asname:
                    backends.add(alias.asname)
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.startswith(KERAS2_MODULES):
                return True
            for alias in node.names:
                if node.module == "keras" and alias.name == "backend":
                    backends.add(alias.asname or "backend")
                if node.module == "keras.backend" and alias.name not in KERAS3_BACKEND:
                    return True
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr not in KERAS3_BACKEND:
            owner = node.value
            if isinstance(owner, ast.Name) and owner.id in backends:
                return True
            if (
                isinstance(owner, ast.Attribute)
                and owner.attr == "backend"
                and isinstance(owner.value, ast.Name)
                and owner.value.id == "keras"
            ):
                return True
    return False


def written_for_keras2(target: str) -> bool:
    """Whether the port calls Keras 2's own API (``K.reshape``, ``keras.engine``) somewhere
    in its tree: code that Keras 3 cannot run, unlike ``tf.keras`` code, which TensorFlow
    2.16 and later run as Keras 3."""
    return any(uses_keras2_api(source) for source in port_sources(target).values())


def looks_legacy(target: str) -> bool:
    """Whether the port of ``MODULE:FACTORY`` is written against Keras 2: tf.keras, or
    standalone Keras 2, in its module or any module of the user's tree it imports (read,
    not run)."""
    return any(
        uses_tf_keras(source) or uses_keras2_api(source) for source in port_sources(target).values()
    )


class _KerasAsTfKeras(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves ``keras`` and ``keras.*`` to tf.keras 2 (``tf_keras``, ``tf_keras.src.*``)."""

    @staticmethod
    def _target(fullname: str) -> str | None:
        rest = fullname[len("keras") :]
        for candidate in (f"tf_keras{rest}", f"tf_keras.src{rest}"):
            try:
                if importlib.util.find_spec(candidate) is not None:
                    return candidate
            except (ImportError, ValueError):
                continue
        return None

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "keras" and not fullname.startswith("keras."):
            return None
        if self._target(fullname) is None:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        return importlib.import_module(self._target(spec.name))

    def exec_module(self, module):
        pass


@contextlib.contextmanager
def keras_resolved_to_tf_keras():
    """While a Keras 2 port is imported, ``import keras`` gives it tf.keras 2, as it did
    when it was written; the engine's own Keras 3 is put back afterwards."""
    if not legacy_keras_enabled():
        yield
        return
    own = {n: m for n, m in sys.modules.items() if n == "keras" or n.startswith("keras.")}
    for name in own:
        del sys.modules[name]
    finder = _KerasAsTfKeras()
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)
        for name in [n for n in sys.modules if n == "keras" or n.startswith("keras.")]:
            del sys.modules[name]
        sys.modules.update(own)


def keras_major(*, keras: str | None, legacy_keras: bool, target: str | None) -> str:
    """'2' for a port written for Keras 2: asked for (``keras``, ``legacy_keras``), or
    detected from the source of ``target`` (a ``MODULE:NAME``); else '3'."""
    if keras:
        return keras
    if legacy_keras or (target and looks_legacy(target)):
        return "2"
    return "3"


def tf_keras_missing() -> str:
    """Why tf.keras 2 cannot run here, with the install command ("" where it can)."""
    if importlib.util.find_spec("tf_keras") is None:
        return (
            "the port is written for Keras 2, which runs here as tf-keras: install it with "
            f"`pip install --no-deps tf-keras~={_tensorflow_version()}` "
            "(or check it with --keras 3)"
        )
    return ""


def enable_legacy_keras() -> str:
    """Hand tf.keras 2 out as tf.keras (and ``keras`` to the port): possible only before
    TensorFlow is imported. Returns why it cannot ("" once enabled)."""
    if tf_keras_missing():
        return tf_keras_missing()
    if "tensorflow" in sys.modules and not legacy_keras_enabled():
        return (
            "a Keras 2 port needs TF_USE_LEGACY_KERAS=1 before TensorFlow is imported; "
            "run parity check in a fresh process (or set the variable yourself)"
        )
    os.environ[LEGACY_ENV] = "1"
    return ""


def _tensorflow_version() -> str:
    from importlib import metadata

    for name in ("tensorflow", "tensorflow-cpu"):
        try:
            return ".".join(metadata.version(name).split(".")[:2]) + ".0"
        except metadata.PackageNotFoundError:
            continue
    return "2.21.0"


def fix_threads(threads: int) -> None:
    """The same thread count for both frameworks, set before either is imported."""
    for name in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(threads)
    os.environ["TF_NUM_INTEROP_THREADS"] = "1"


def strict_float32() -> None:
    """Float32 computed as float32 on a GPU, where the libraries' defaults run convolutions
    and matmuls in TF32 (float16's 10 mantissa bits: the bundled port failed the policy by
    75-214x so on an H200): PyTorch's two switches off, ``NVIDIA_TF32_OVERRIDE=0`` for the
    CUDA libraries TensorFlow loads, JAX's default matmul precision "highest" (read when JAX
    is imported, so call this first). Nothing changes on a CPU."""
    os.environ["NVIDIA_TF32_OVERRIDE"] = "0"
    os.environ["JAX_DEFAULT_MATMUL_PRECISION"] = "highest"
    if "jax" in sys.modules:
        sys.modules["jax"].config.update("jax_default_matmul_precision", "highest")
    import torch

    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
