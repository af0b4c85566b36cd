"""Which pairs a check runs: registered modules by name (or one at a size variant), a pair
of the user's own (``--spec MODULE:PAIR``), or a registered module against the user's port
(its factory, weight map, declared-absent parameters and layout).

One answer for the command and anyone scripting it; what cannot be selected raises a
``parity.core.errors.CannotCheck`` (``SelectionError``, ``UnknownPair``, ``UnknownVariant``, a
port that cannot be loaded, a weight map that cannot be read) whose message is the one line
the command prints.
"""

from __future__ import annotations

from dataclasses import dataclass

from parity.core import registry
from parity.core.errors import SelectionError, UnknownPair


@dataclass(frozen=True)
class Selection:
    """What ``parity check`` was asked to check (its arguments, framework-free)."""

    modules: tuple[str, ...] = ()
    spec: str | None = None
    variant: str | None = None
    port: str | None = None
    weight_map: str | None = None
    absent: tuple[str, ...] = ()
    data_format: str | None = None


def select_pairs(selection: Selection) -> list:
    """The ``ModulePair`` s to check, in order (imports the frameworks)."""
    pairs = [_spec_pair(selection)] if selection.spec else _registered(selection)
    if selection.port is None:
        if selection.weight_map or selection.data_format or selection.absent:
            raise SelectionError(
                "--weight-map, --absent and --data-format describe a port: give --port too"
            )
        return pairs
    if len(pairs) != 1:
        raise SelectionError("--port checks one module: name it (parity check MODULE --port ...)")
    return [_with_users_port(pairs[0], selection)]


def _spec_pair(selection: Selection):
    from parity.backends.ports import import_target
    from parity.core.spec import ModulePair

    if selection.modules:
        raise SelectionError("give either --spec or module names, not both")
    pair = import_target(selection.spec, "--spec", "PAIR")
    if not isinstance(pair, ModulePair):
        raise SelectionError(
            f"--spec {selection.spec} is a {type(pair).__name__}, not a ModulePair"
        )
    return pair


def check_names(modules: tuple[str, ...], variant: str | None = None) -> None:
    """Registered module names, and a size variant one of them has: checked without
    importing a framework (the command answers a typo at once)."""
    unknown = [name for name in modules if name not in registry.names()]
    if unknown:
        raise UnknownPair(unknown[0], sorted(registry.names()))
    if variant is None:
        return
    if len(modules) != 1:
        raise SelectionError("--variant checks one module at another size: name it")
    registry.definition(modules[0]).size_variant(variant)


def _registered(selection: Selection) -> list:
    check_names(selection.modules, selection.variant)
    if selection.variant is not None:
        return [registry.variant_pair(selection.modules[0], selection.variant)]
    return [registry.pair(name) for name in selection.modules or registry.names()]


def _with_users_port(pair, selection: Selection):
    from parity.backends.ports import load_factory
    from parity.core.spec import with_port
    from parity.core.weight_map import read_weight_map

    factory = load_factory(selection.port)
    weight_map = read_weight_map(selection.weight_map) if selection.weight_map else None
    return with_port(
        pair,
        factory,
        weight_map=weight_map,
        data_format=selection.data_format,
        absent=selection.absent,
    )
