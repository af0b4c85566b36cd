"""Test settings in one place: Hypothesis profiles, quiet TensorFlow, threads for 2 cores.

Profiles: ``dev`` (default: 100 examples per property, random, with Hypothesis'
example database), ``ci`` (50 examples, derandomized so a CI log is reproducible; chosen
automatically when CI=true), ``thorough`` (1,000 examples), ``quick`` (25 examples,
derandomized: the JAX backend's CI step). Choose one with ``--hypothesis-profile NAME`` or
``DANET_PARITY_PROFILE=NAME``.
"""

import os

# Before TensorFlow or PyTorch is imported anywhere.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# JAX computes float64 only when asked; the float64 semantic tests need it.
os.environ.setdefault("JAX_ENABLE_X64", "1")
THREADS = os.environ.setdefault("DANET_PARITY_THREADS", "2")
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", THREADS)
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", THREADS)

import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

from parity.backends.quiet import import_keras_quietly  # noqa: E402

import_keras_quietly()

torch.set_num_threads(int(THREADS))

_COMMON = dict(
    deadline=None,  # the first call of a Keras layer traces
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("dev", max_examples=100, **_COMMON)
# CI: 50 fixed examples per property, so that the whole run fits its time; the `dev` runs
# on developers' machines draw 100 new ones each time, `thorough` 1,000.
settings.register_profile("ci", max_examples=50, derandomize=True, database=None, **_COMMON)
settings.register_profile("thorough", max_examples=1000, **_COMMON)
# For the JAX backend in CI: compiling every new shape makes an example cost ~0.4 s there.
settings.register_profile("quick", max_examples=25, derandomize=True, database=None, **_COMMON)

_default = "ci" if os.environ.get("CI", "").lower() in ("1", "true", "yes") else "dev"
settings.load_profile(os.environ.get("DANET_PARITY_PROFILE", _default))


# The plugin users install (options --parity-port, ..., the header, the properties); loaded
# here too where the installed package predates it. Registered once either way: pytest skips
# a plugin already loaded under this name from the entry point.
pytest_plugins = ["parity.frontends.pytest.plugin"]


def pytest_report_header(config):
    return [f"danet-parity: {THREADS} threads per framework"]


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_code():
    """After each test module, drop the cached checkers (their layers hold compiled
    functions) and, on JAX, the compilation caches: a long JAX session on a small machine
    otherwise grows until XLA's compiler dies (seen here: SIGSEGV, SIGABRT)."""
    yield
    from parity.run.assertions import checker_for, training_checker_for

    checker_for.cache_clear()
    training_checker_for.cache_clear()
    import keras

    if keras.backend.backend() == "jax":
        import jax

        jax.clear_caches()
    keras.backend.clear_session()
