"""The one-line reproduction of a counterexample: the ``parity check ... --example ...``
command that reruns it, on the Keras backend it ran on.

One builder for every place that prints one (the ``parity`` command, ParityFailure's note
under pytest, the pytest plugin's ports), so that they cannot drift apart.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass

from parity.core import registry


@dataclass(frozen=True)
class Origin:
    """What selects a pair's port and its size on the command line: a failure's replay
    command repeats it (``ModulePair.origin``; the bundled port at its registered size has
    the empty origin)."""

    port: str | None = None  # MODULE:FACTORY
    weight_map: str | None = None  # a JSON file
    absent: tuple[str, ...] = ()  # glob patterns
    legacy_keras: bool = False
    keras: str | None = None  # "2" or "3", as asked for
    data_format: str | None = None
    variant: str | None = None  # a registered size (danet: resnet50)
    no_tf32: bool = False
    factor: float | None = None  # the policy's, where not the default
    export: str | None = None  # the artifact judged (--export tflite)

    def flags(self) -> str:
        """The ``parity check`` flags ("" for the bundled port at its registered size)."""
        flags = [f"--variant {self.variant}"] if self.variant else []
        flags += [f"--port {self.port}"] if self.port else []
        flags += [f"--weight-map {self.weight_map}"] if self.weight_map else []
        flags += [f"--absent {shlex.quote(pattern)}" for pattern in self.absent]
        flags += ["--legacy-keras"] if self.legacy_keras else []
        flags += [f"--keras {self.keras}"] if self.keras else []
        flags += [f"--data-format {self.data_format}"] if self.data_format else []
        flags += ["--no-tf32"] if self.no_tf32 else []
        flags += [f"--factor {self.factor:g}"] if self.factor is not None else []
        flags += [f"--export {self.export}"] if self.export else []
        return " ".join(flags)

    def __bool__(self) -> bool:
        return bool(self.flags())


FRAMEWORK_ENV = "DANET_PARITY_FRAMEWORK"
"""Names the framework ports are built in (``parity.backends.protocol.IMPLEMENTATIONS``)."""


def backend_prefix() -> str:
    """``KERAS_BACKEND=...`` when checks run on a backend other than TensorFlow, and
    ``DANET_PARITY_FRAMEWORK=...`` when a framework was named, so that a replay command
    runs where its failure happened."""
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    prefix = "" if backend == "tensorflow" else f"KERAS_BACKEND={backend} "
    framework = os.environ.get(FRAMEWORK_ENV)
    return prefix + (f"{FRAMEWORK_ENV}={framework} " if framework else "")


BUNDLED = Origin()
"""The bundled port at its registered size: nothing to add to ``parity check NAME``."""


def replay_command(
    target: str, example, *, origin: Origin = BUNDLED, train: str | None = None
) -> str:
    """``parity check TARGET FLAGS [--train OPTIMIZER] --example B,C,H,W,SCALE,SEED``.

    ``target``: a registered module's name or ``--spec MODULE:PAIR``; ``origin``: what
    selects the port and its size; ``train``: the optimizer's name for a training step."""
    parts = ["parity check", target]
    parts += [origin.flags()] if origin else []
    parts += [f"--train {train}"] if train else []
    parts.append(f"--example {example.to_text()}")
    return backend_prefix() + " ".join(parts)


def python_replay(example, *, train: str | None = None, precision: str = "float32") -> str:
    """The Python call that reruns ``example`` on a pair the command cannot name, or at a
    mixed-precision compute dtype (the command checks float32 only)."""
    checker = "Checker(pair)"
    if precision != "float32":
        checker = f"Checker(pair, precision={precision!r})"
    if train:
        return (
            f"TrainingChecker({checker}).check(Example.from_text({example.to_text()!r}), "
            f"OPTIMIZERS[{train!r}])"
        )
    return f"{checker}.check(Example.from_text({example.to_text()!r}))"


def replay_for(pair, example, train: str | None = None, precision: str = "float32") -> str:
    """The ``parity check`` command that reruns ``example`` of ``pair`` (a ``ModulePair``;
    a training step with ``train``, the optimizer's name), or the Python call for what the
    command cannot name: a pair of its own, a mixed-precision ``precision``."""
    if pair.name in registry.names() and precision == "float32":
        return replay_command(pair.name, example, origin=pair.origin, train=train)
    return python_replay(example, train=train, precision=precision)
