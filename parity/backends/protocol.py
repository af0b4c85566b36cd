"""The seam between the engine and the framework a port is written in.

The engine (``engine``, ``training``, ``divergence``, ``checkpoint``, ``layout``) asks the
port's framework for the few things it needs: build a port and record its weights, list
and assign weights, run it (forward and vector-Jacobian product, eager or compiled), make
one training step. It never imports Keras, TensorFlow or JAX itself (``tests/
test_framework_seam.py`` holds it to that). Implementations: ``keras_framework`` (Keras 3,
every backend) and ``tf_keras_framework`` (tf.keras 2, for ports written against Keras 2).

The reference has a seam of its own, :class:`Reference`, implemented by
``torch_reference.TorchReference``: the engine asks it for a pair's module, its outputs and
vector-Jacobian product, one training step, sub-module outputs, and each of those once more
under the running error bound. Its instruments (``error_bound``, ``rounding``) and the
hypotheses about it (``variants``, ``traps``) are written in PyTorch, as the reference is.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from parity.backends.which_keras import legacy_keras_enabled
from parity.core.errors import UnknownFramework
from parity.core.layout import variable_path
from parity.core.replay import FRAMEWORK_ENV


@dataclass
class PortInstance:
    """A built port: what to call, its weights in the order created, what it leaves untracked."""

    layer: Any  # a keras Layer, or the keras.Model traced from a function
    weights: list  # keras Variables, creation order
    untracked: list[str] = field(default_factory=list)  # "name shape", bare variables
    from_function: bool = False
    names: dict = field(default_factory=dict)  # id(weight) -> name, where paths say too little
    built_for: tuple = ()  # the input shape it was built on
    bare: list = field(default_factory=list)  # the untracked variables themselves
    with_bare: list = field(default_factory=list)  # weights and bare variables, creation order

    def name_of(self, weight) -> str:
        """The weight's path inside the port by the author's attribute names ('q/kernel'),
        the same for every instance (not 'my_pam_3/conv2d_9/kernel')."""
        path = self.names.get(id(weight)) or variable_path(weight)
        return path.removeprefix(f"{self.layer.name}/")


Cotangents = Callable[[tuple], Sequence[np.ndarray]] | Sequence[np.ndarray]


@runtime_checkable
class Framework(Protocol):
    """What the engine needs from the framework of a port. Arrays cross the seam as NumPy,
    in the port's own layout; weights are the framework's variables, handed back as given."""

    name: str  # 'keras 3 (tensorflow)', for messages
    backend: str  # where the port's tensors live: 'tensorflow', 'jax' or 'torch'
    modes: tuple[str, ...]  # how it can run a port: 'eager' first

    def default_mode(self) -> str: ...

    def check_mode(self, mode: str) -> None:
        """Raises ValueError for a mode this framework cannot run."""

    def build(self, factory: Callable, channels: int, x: np.ndarray) -> PortInstance:
        """``factory(channels)`` built on an input like ``x``, its weights recorded in the
        order they were created (raises PortLoadError, PortCrashed or WeightsNotHeld)."""

    def weights(self, layer) -> list:
        """Every weight the layer tracks."""

    def full_tracebacks(self) -> AbstractContextManager[None]:
        """Errors raised meanwhile keep every frame: Keras drops its own and TensorFlow's,
        and TensorFlow's say that a port on another backend called it."""

    def assign(self, variable, value: np.ndarray) -> None: ...

    def to_numpy(self, value) -> np.ndarray:
        """A tensor or a weight as a NumPy array."""

    def forward(self, layer, x: np.ndarray, mode: str) -> tuple[np.ndarray, ...]:
        """The outputs on ``x`` (inference)."""

    def vjp(
        self, layer, x: np.ndarray, cotangents: Cotangents, variables: Sequence, mode: str
    ) -> tuple[tuple[np.ndarray, ...], np.ndarray, list[np.ndarray]]:
        """Outputs, and the gradients of sum(output * cotangent) w.r.t. ``x`` and
        ``variables``; ``cotangents`` may be a function of the outputs."""

    def train_step(
        self,
        layer,
        x: np.ndarray,
        targets: Callable[[list[tuple[int, ...]]], list[np.ndarray]],
        data_format: str,
        variables: Sequence,
        optimizer: Any,
    ) -> tuple[tuple[np.ndarray, ...], float]:
        """One step in training mode on the summed pixel-wise cross-entropy of the outputs
        against ``targets(output shapes)``, by ``optimizer`` (``parity.core.optimizers.Optimizer``).
        Returns (outputs, loss)."""

    def dtype_policy(self, name: str) -> AbstractContextManager:
        """Ports built inside it compute in ``name`` ('mixed_float16', ...)."""

    def dropout_off(self, layer) -> AbstractContextManager:
        """The layer's dropout disabled inside it (masks cannot match across frameworks)."""

    def owners(self, layer) -> dict[int, Any]:
        """id(weight) -> the sub-layer (or the layer itself) that holds it."""

    def recording_outputs(self, layers: dict[str, Any], into: dict) -> AbstractContextManager:
        """Each of ``layers`` (path -> sub-layer) keeps its first output, as NumPy, in
        ``into[path]`` while inside it (eager runs only)."""

    def intermediates(self, layer, x: np.ndarray) -> list | None:
        """Every tensor the port computes on ``x`` (inference), as
        ``parity.core.steps.PortValue`` s in the order computed; None where this framework
        or backend cannot list them."""

    def save_weights(self, layer, path: str) -> None: ...

    def exported(self, artifact) -> Framework:
        """This framework with its forward pass run on the port exported as ``artifact`` (a
        ``parity.core.artifacts.Artifact``) and its tensors listed from the artifact.
        Raises ExportRuntimeMissing without the format's tools, UsageError where this
        framework cannot export."""

    def load_weights(self, layer, path: str) -> None: ...


class Reference(Protocol):
    """What the engine needs from the reference of a pair. Arrays cross as NumPy (float64,
    the reference's NCHW layout), dtypes as names ("float64"); ``data`` is the example's
    ``parity.core.strategies.ExampleData`` (state, input, cotangents)."""

    def module(self, channels: int, dtype: str = "float64") -> Any:
        """The reference module for this channel count, built once per dtype."""

    def parameter_names(self, channels: int) -> list[str]: ...

    def submodules(self, channels: int) -> dict[str, Any]:
        """Every sub-module by its path (``""`` the whole module)."""

    def run(
        self, channels: int, data, dtype: str, *, gradients: bool, forward=None, skip=()
    ) -> dict[str, np.ndarray]:
        """Outputs and, with ``gradients``, the gradients of sum(output * cotangent) w.r.t.
        the input and every parameter not in ``skip``; ``forward`` replaces the forward
        pass (the diagnosis' variants)."""

    def deviations(self, channels: int, data, *, gradients: bool, skip=()) -> dict[str, np.ndarray]:
        """The running error bound of each tensor ``run`` gives."""

    def train(
        self, channels: int, data, dtype: str, optimizer: Any, targets: Callable
    ) -> dict[str, np.ndarray]:
        """One training step: outputs, loss and every floating state entry after it."""

    def train_deviations(
        self, channels: int, data, optimizer: Any, targets: Callable
    ) -> dict[str, np.ndarray]: ...

    def record(
        self, channels: int, data, dtype: str, paths, *, order=None, sprung=None
    ) -> dict[str, np.ndarray]:
        """Each sub-module's output on the example, in execution order."""

    def record_deviations(self, channels: int, data, paths) -> dict[str, np.ndarray]: ...

    def steps(self, channels: int, data) -> list:
        """The forward pass line by line (``parity.core.steps.Step``), for the localization."""


IMPLEMENTATIONS = {
    "keras": "parity.backends.keras.framework",
    "tf_keras": "parity.backends.tf_keras",
}
"""Each framework a port can be written in -> the module whose ``FRAMEWORK`` implements the
protocol. A new framework is a module (or a folder beside ``keras/``) and a line here; it is
chosen with ``DANET_PARITY_FRAMEWORK=NAME``, which replay commands repeat."""


def framework_name() -> str:
    """The framework ports are built in now: ``DANET_PARITY_FRAMEWORK`` if set, else tf.keras 2
    in legacy mode (``which_keras``), else Keras 3 on its configured backend."""
    name = os.environ.get(FRAMEWORK_ENV) or ("tf_keras" if legacy_keras_enabled() else "keras")
    if name not in IMPLEMENTATIONS:
        raise UnknownFramework(f"{FRAMEWORK_ENV}={name}: expected one of {sorted(IMPLEMENTATIONS)}")
    return name


def port_framework() -> Framework:
    """The implementation of the framework ports are built in now, imported on first use:
    the command decides on legacy mode before any framework loads."""
    return importlib.import_module(IMPLEMENTATIONS[framework_name()]).FRAMEWORK


def as_tuple(outputs) -> tuple:
    """One output or several, as a tuple (either side of the seam)."""
    return tuple(outputs) if isinstance(outputs, (tuple, list)) else (outputs,)
