"""What the diagnosis tests: named bugs, each an object with an identity of its own.

A hypothesis has a ``key`` (its identity: findings, merges and the power tests refer to a
hypothesis by it, so that rewording it changes nothing but the words) and a ``name`` (a few
words, printed). What it predicts depends on its kind:

- ``parity.variants.Variant``: the reference with the bug, run on the reference's weights;
- ``parity.reassignments``: the port itself with its weights assigned another way;
- ``Probe`` (here): an experiment rather than a prediction (does sample 0 change sample 1?).

The pairs supply their own (``ModulePair.variants``, ``role_swaps``, ``buffer_swaps``); the
diagnosis adds the generic ones. Importing this module imports no framework.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class Hypothesis(Protocol):
    """A named bug the diagnosis can test."""

    @property
    def key(self) -> str:
        """Its identity, stable when its words change."""

    @property
    def name(self) -> str:
        """A few words, for lists of findings."""


@dataclass(frozen=True)
class Probe:
    """A hypothesis tested by an experiment on the port or by the pattern of the failing
    tensors, not by a prediction of its outputs."""

    key: str
    name: str


GRADIENTS_ONLY = Probe("gradients-only", "bug only in gradients")
"""The forward pass is exact and some gradient is not."""

BATCH_LEAK = Probe("batch-leak", "information leaking across the batch")
"""Changing one sample's input moves another sample's output."""

PRECISION_LEVEL = Probe("precision-level", "precision-level deviation")
"""Every error is far below a structural bug's, yet above the reference's own."""


def same(first: Hypothesis, second: Hypothesis) -> bool:
    """The same hypothesis, whatever its words."""
    return first.key == second.key
