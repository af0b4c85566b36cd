"""What the diagnosis tests: named bugs, each an object with an identity of its own.

A hypothesis has a ``key`` (its identity: findings, merges and the power tests refer to a
hypothesis by it, so that rewording it changes nothing but the words) and a ``name`` (a few
words, printed). What it predicts depends on its kind:

- ``parity.backends.torch.variants.Variant``: the reference with the bug, run on the reference's
weights;
- ``parity.diagnosis.reassignments``: the port itself with its weights assigned another way;
- ``Probe`` (here): an experiment rather than a prediction (does sample 0 change sample 1?).

The pairs supply their own (``ModulePair.variants``, ``role_swaps``, ``buffer_swaps``); the
diagnosis adds the generic ones. Importing this module imports no framework.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from parity.core.layout import Binding
from parity.core.weight_map import Roles, name_role, reference_role


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

NONDETERMINISTIC = Probe("nondeterministic", "nondeterministic outputs")
"""The same input and weights give other outputs on the next call (dropout or a random op
left on): no other hypothesis can be judged on numbers that move."""

PRECISION_LEVEL = Probe("precision-level", "precision-level deviation")
"""Every error is far below a structural bug's, yet above the reference's own."""


def same(first: Hypothesis, second: Hypothesis) -> bool:
    """The same hypothesis, whatever its words."""
    return first.key == second.key


# -- the port right, its weights assigned wrong (``parity.diagnosis.reassignments``) -----------


@dataclass(frozen=True)
class Assigned:
    """How the port's weights are assigned now, for one example: what every reassignment
    starts from."""

    bindings: list[Binding]
    instance: Any  # parity.backends.ports.PortInstance: its weights' names
    state: dict[str, np.ndarray]  # the reference's parameters
    roles: Roles = ()
    declared_absent: tuple[str, ...] = ()


@dataclass(frozen=True)
class Rebinding:
    """A reassignment's prediction for one example: the port loaded through ``bindings``."""

    bindings: list[Binding]
    cause: str
    suggestion: str = ""  # a weight map that makes the port pass, where one does


class Reassignment(Protocol):
    key: str
    name: str

    def rebind(self, assigned: Assigned) -> Rebinding | None: ...


def _changes(new: list[Binding], old: list[Binding]) -> bool:
    return any(n.variable is not o.variable for n, o in zip(new, old, strict=True))


# -- query and key held the other way round --------------------------------------------------


@dataclass(frozen=True)
class RoleSwap:
    """Two parameter roles a port may hold the other way round (query and key): the
    diagnosis loads each reference parameter into the other's weight and sees whether the
    port then matches. ``same_as``: the bug in the math that predicts the same numbers, in
    words (``its energy is key^T query``); ``variant``: that bug's hypothesis (a
    ``parity.backends.torch.variants.Variant``), whose finding is merged with this one;
    ``held_in``: what holds each role (``convolution``)."""

    first: str
    second: str
    same_as: str = ""
    variant: Any = None
    held_in: str = "weights"

    @property
    def key(self) -> str:
        return f"roles-swapped.{self.first}-{self.second}"

    @property
    def name(self) -> str:
        return f"{self.first} and {self.second} named the other way round"

    def rebind(self, assigned: Assigned) -> Rebinding | None:
        """The port's weights for the two roles loaded into each other's place, with the
        weight map that makes it pass; None where the pair's parameters hold no such two
        roles."""
        current = assigned.bindings
        roles = {b.torch_key: reference_role(b.torch_key, assigned.roles) for b in current}
        partners = {self.first: self.second, self.second: self.first}
        swapped = []
        for b in current:
            role, kind = roles[b.torch_key]
            partner_role = partners.get(role)
            partner = partner_role and next(
                (o for o in current if roles[o.torch_key] == (partner_role, kind)), None
            )
            swapped.append(Binding(b.torch_key, partner.variable, b.layout) if partner else b)
        if not _changes(swapped, current):
            return None
        name_of = assigned.instance.name_of
        mapping = {b.torch_key: name_of(b.variable) for b in swapped}
        mapping.update({key: None for key in assigned.declared_absent})
        suggestion = json.dumps(mapping, indent=2)
        return Rebinding(
            swapped,
            self._cause(current, swapped, name_of, assigned.roles),
            f"Pass this as --weight-map FILE.json:\n{suggestion}",
        )

    def _cause(self, current, swapped, name_of, roles) -> str:
        """'the port's `k` computes the reference's query and its `q` the reference's key',
        when the port's names say query and key; else that its weights were assigned the
        other way."""
        first, second = self.first, self.second
        same = f" (or, the same numbers, {self.same_as})" if self.same_as else ""
        owners = {}
        for now, then in zip(current, swapped, strict=True):
            role, kind = reference_role(now.torch_key, roles)
            if kind == "weight" and role in (first, second):
                owners[role] = name_of(then.variable).rsplit("/", 1)[0]
        named = {role: name_role(name, roles)[0] for role, name in owners.items()}
        if set(owners) == {first, second} and named == {first: second, second: first}:
            return (
                f"the port's `{owners[first]}` computes the reference's {first} and its "
                f"`{owners[second]}` the reference's {second}: its names say the opposite. "
                f"Loaded against their names, the weights make the port match{same}; if the "
                "names are what is wrong, use the weight map below"
            )
        return (
            f"{first} and {second} are assigned the other way round: loaded into each "
            f"other's {self.held_in}, the weights make the port match{same}; if the assignment "
            "is what is wrong, use the weight map below"
        )


# -- two buffers exchanged in conversion -------------------------------------------------------


@dataclass(frozen=True)
class BufferSwap:
    """Two tensors a conversion may exchange, named by the last part of their keys
    (``running_mean``, ``running_var``): the diagnosis loads each into the other's weight."""

    first: str
    second: str
    name: str
    cause: str

    @property
    def key(self) -> str:
        return f"buffers-swapped.{self.first}-{self.second}"

    def rebind(self, assigned: Assigned) -> Rebinding | None:
        """Each tensor ending in ``first`` loaded into its sibling ``second``'s weight and
        the other way round; None where no key ends in them."""
        current = assigned.bindings
        partners = {self.first: self.second, self.second: self.first}
        by_key = {b.torch_key: b for b in current}
        exchanged = []
        for b in current:
            stem, _, last = b.torch_key.rpartition(".")
            partner = by_key.get(f"{stem}.{partners[last]}") if last in partners else None
            exchanged.append(Binding(b.torch_key, partner.variable, b.layout) if partner else b)
        return Rebinding(exchanged, self.cause) if _changes(exchanged, current) else None


BATCH_NORM_STATISTICS = BufferSwap(
    "running_mean",
    "running_var",
    "running mean and variance swapped",
    "BatchNorm's running mean and running variance are swapped in conversion",
)
"""PyTorch's BatchNorm buffers, which a converter may exchange: tried for every pair (where no
key ends in them, the hypothesis does not arise)."""
