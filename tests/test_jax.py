"""What a long run on JAX needs (skipped on the other backends)."""

import keras
import pytest

from parity.backends.keras import autodiff as keras_autodiff
from parity.core import registry
from parity.core.strategies import Example
from parity.run.engine import Checker

PAM = registry.pair("pam")

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "jax", reason="JAX's compiled programs (KERAS_BACKEND=jax)"
)


def test_compiled_programs_are_dropped_before_they_exhaust_the_memory_maps(monkeypatch):
    """Every new shape compiles a program that holds memory maps, and a process may hold
    65,530: two random-seed runs of the parity properties aborted on JAX after about 820
    examples. Past ``JAX_PROGRAMS_KEPT`` new shapes every program is dropped, and the
    examples after it compile again and pass."""
    import jax  # installed only where Keras runs on it

    cleared = []
    clear_caches = jax.clear_caches
    monkeypatch.setattr(jax, "clear_caches", lambda: (cleared.append(True), clear_caches()))
    monkeypatch.setattr(keras_autodiff, "JAX_PROGRAMS_KEPT", 3)
    monkeypatch.setattr(keras_autodiff, "_jax_shapes", set())
    checker = Checker(PAM)
    for seed, (height, width) in enumerate([(1, 2), (2, 3), (3, 1), (2, 2), (4, 1)]):
        assert checker.check(Example(2, 8, height, width, 1.0, seed)).passed
    assert cleared == [True]  # at the fourth new shape (the fifth is the second since)
