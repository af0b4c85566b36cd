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
_LEGACY_SOURCE = re.compile(r"\b(tf\.keras|tensorflow\.keras|tf_keras)\b")

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


def _port_source(target: str) -> str | None:
    """The source of the module of ``[pam=]MODULE:FACTORY``, read, not run."""
    module = target.partition("=")[-1] if "=" in target.partition(":")[0] else target
    module = module.partition(":")[0]
    working_directory_on_path()
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    try:
        with open(spec.origin, encoding="utf-8") as handle:
            return handle.read()
    except OSError:
        return None


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


def looks_legacy(target: str) -> bool:
    """Whether the module of ``MODULE:FACTORY`` is written against Keras 2: tf.keras, or
    standalone Keras 2 (read, not run)."""
    source = _port_source(target)
    return bool(source) and bool(_LEGACY_SOURCE.search(source) or uses_keras2_api(source))


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


def enable_legacy_keras() -> str:
    """Hand tf.keras 2 out as tf.keras (and ``keras`` to the port): possible only before
    TensorFlow is imported. Returns why it cannot ("" once enabled)."""
    if importlib.util.find_spec("tf_keras") is None:
        return (
            "the port is written for Keras 2, which runs here as tf-keras: install it with "
            f"`pip install --no-deps tf-keras~={_tensorflow_version()}` "
            "(or check it with --keras 3)"
        )
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
