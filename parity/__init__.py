"""danet-parity: prove that a Keras port computes what its PyTorch reference computes.

What a user imports for a pair of their own (``from parity import ModulePair, assert_parity``)
is listed in ``__all__``. Each name is imported on first use: ``import parity`` (and the
``parity`` command answering a usage error) loads no framework.
"""

from __future__ import annotations

import importlib

_HOMES = {
    # describing a pair
    "ModulePair": "parity.core.spec",
    "mapped_bindings": "parity.core.spec",
    "with_port": "parity.core.spec",
    "random_parameters": "parity.core.spec",
    "Example": "parity.core.strategies",
    "examples": "parity.core.strategies",
    # checking it
    "Checker": "parity.run.engine",
    "ExampleReport": "parity.run.engine",
    "assert_parity": "parity.run.assertions",
    "ParityFailure": "parity.core.errors",
    "check_port": "parity.frontends.pytest.properties",
    "TolerancePolicy": "parity.core.policy",
    "TensorComparison": "parity.core.policy",
    "PortError": "parity.core.errors",
    # where a model first differs, and why
    "locate": "parity.diagnosis.divergence",
    "Divergence": "parity.diagnosis.divergence",
    # the bundled pairs
    "pair": "parity.core.registry",
    "PairDefinition": "parity.core.registry",
    # weights
    "load_state_dict": "parity.backends.weights",
    "export_state_dict": "parity.backends.weights",
    "load_keras_weights": "parity.frontends.convert",
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
