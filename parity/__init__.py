"""danet-parity: prove that a Keras port computes what its PyTorch reference computes.

What a user imports for a pair of their own (``from parity import ModulePair, assert_parity``)
is listed in ``__all__``. Each name is imported on first use: ``import parity`` (and the
``parity`` command answering a usage error) loads no framework.
"""

from __future__ import annotations

import importlib

_HOMES = {
    # describing a pair
    "ModulePair": "parity.spec",
    "mapped_bindings": "parity.spec",
    "with_port": "parity.spec",
    "random_parameters": "parity.spec",
    "Example": "parity.strategies",
    "examples": "parity.strategies",
    # checking it
    "Checker": "parity.engine",
    "ExampleReport": "parity.engine",
    "assert_parity": "parity.assertions",
    "ParityFailure": "parity.assertions",
    "check_port": "parity.properties",
    "TolerancePolicy": "parity.compare",
    "TensorComparison": "parity.compare",
    "PortError": "parity.ports",
    # where a model first differs, and why
    "locate": "parity.divergence",
    "Divergence": "parity.divergence",
    # the bundled pairs
    "pair": "parity.registry",
    "PairDefinition": "parity.registry",
    # weights
    "load_state_dict": "parity.layout",
    "export_state_dict": "parity.layout",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'parity' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value  # once imported, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
