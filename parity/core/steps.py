"""What the localization compares: the reference's forward pass line by line, and every
tensor the port computes, both as NumPy arrays in their own layouts.

A reader of the reference recognises its values by the lines that compute them
(``attention = self.softmax(energy)``); a reader of the port by its operations and the
lines of its source that created them. Both sides are recorded by the backends
(``parity.backends.torch.steps``, ``parity.backends.keras.intermediates``) and matched by
``parity.diagnosis.localize``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Step:
    """One line of the reference's forward pass as it ran on an example: the value of its
    last operation, in float64 (``truth``), in the compute dtype (``reference``) and its
    running error bound (``deviation``, units of the roundoff; None without a rule)."""

    index: int
    where: str  # "attention.py:50"
    source: str  # "energy = torch.bmm(query, key)  # (B, N, N)"
    op: str  # the line's last operation, as PyTorch names it: "_softmax"
    truth: np.ndarray
    reference: np.ndarray | None
    deviation: np.ndarray | None
    parents: tuple[int, ...]  # the steps whose values this line reads
    op_inputs: tuple[np.ndarray, ...] = ()  # float64 operands of the last operation
    op_arguments: tuple = ()  # its other arguments (a softmax's axis)
    # The line run again with some parents' values replaced ({parent index: array}).
    recompute: Callable[[dict], np.ndarray] | None = field(default=None, compare=False)

    @property
    def is_input(self) -> bool:
        return self.index == 0

    @property
    def code(self) -> str:
        """The line without its trailing comment."""
        return self.source.split("  #")[0].strip()

    def describe(self) -> str:
        """Where and what: ``attention.py:53 `attention = self.softmax(energy)```."""
        return f"{self.where} `{self.code}`"


@dataclass(frozen=True)
class PortValue:
    """One tensor the port computes on an example: the operation that made it, where in the
    port's source it was created, and the port values it reads."""

    index: int
    name: str  # the framework's name: "pam/Softmax:0"
    op: str  # "Softmax"
    value: np.ndarray
    where: str  # "my_port.py:42", or "" where the source is not the port's
    source: str  # that line's text
    inputs: tuple[int, ...]
    quantization_step: float = 0.0  # an int8 tensor's scale (its value dequantized); 0: float

    def describe(self) -> str:
        """``RealDiv at my_port.py:21  `e = e / 2```; without a line of the port's source
        (a function port's graph replayed by Keras), the name its layer gave it."""
        if not self.where:
            return f"{self.op} `{self.name.rsplit(':', 1)[0]}`"
        source = f"  `{self.source}`" if self.source else ""
        return f"{self.op} at {self.where}{source}"
