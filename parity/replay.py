"""The one-line reproduction of a counterexample: the ``parity check ... --example ...``
command that reruns it, on the Keras backend it ran on.

One builder for every place that prints one (the ``parity`` command, ParityFailure's note
under pytest, the pytest plugin's ports), so that they cannot drift apart.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable

from parity.frameworks import backend_prefix


def port_flags(
    *,
    port: str | None = None,
    weight_map: str | None = None,
    absent: Iterable[str] = (),
    legacy_keras: bool = False,
    keras: str | None = None,
    data_format: str | None = None,
) -> str:
    """The ``parity check`` flags that select a port and say how to read it, in the order
    ``parity check --help`` lists them ("" for the bundled port)."""
    flags = [f"--port {port}"] if port else []
    flags += [f"--weight-map {weight_map}"] if weight_map else []
    flags += [f"--absent {shlex.quote(pattern)}" for pattern in absent]
    flags += ["--legacy-keras"] if legacy_keras else []
    flags += [f"--keras {keras}"] if keras else []
    flags += [f"--data-format {data_format}"] if data_format else []
    return " ".join(flags)


def replay_command(target: str, example, *, flags: str = "", train: str | None = None) -> str:
    """``parity check TARGET FLAGS [--train OPTIMIZER] --example B,C,H,W,SCALE,SEED``.

    ``target``: a registered module's name or ``--spec MODULE:PAIR``; ``flags``: the port's
    (``port_flags``); ``train``: the optimizer's name for a training step."""
    parts = ["parity check", target]
    parts += [flags] if flags else []
    parts += [f"--train {train}"] if train else []
    parts.append(f"--example {example.to_text()}")
    return backend_prefix() + " ".join(parts)


def python_replay(example, *, train: str | None = None) -> str:
    """The Python call that reruns ``example`` on a pair the command cannot name."""
    if train:
        return (
            f"TrainingChecker(Checker(pair)).check(Example.from_text({example.to_text()!r}), "
            f"OPTIMIZERS[{train!r}])"
        )
    return f"Checker(pair).check(Example.from_text({example.to_text()!r}))"
