"""The pytest plugin (entry point ``pytest11``): the parity properties against your port,
from your own repository.

    pip install danet-parity
    pytest --parity-port my_port:make_pam        # or DANET_PARITY_PORT=my_port:make_pam

adds the properties of ``parity.frontends.pytest.properties`` (outputs and every gradient) to the
session, run against that port, prints the port, the Hypothesis profile and the versions in the
header, and a failure prints the ``parity check`` command that replays it. Without a port
the plugin adds nothing and imports no framework.
"""

from __future__ import annotations

import os
from importlib.metadata import PackageNotFoundError, version

import pytest

PORT_ENV = "DANET_PARITY_PORT"
WEIGHT_MAP_ENV = "DANET_PARITY_WEIGHT_MAP"
DATA_FORMAT_ENV = "DANET_PARITY_DATA_FORMAT"
EXAMPLES_ENV = "DANET_PARITY_EXAMPLES"


def pytest_addoption(parser):
    group = parser.getgroup("danet-parity", "parity of a Keras port with DANet's PyTorch modules")
    group.addoption(
        "--parity-port",
        default=os.environ.get(PORT_ENV),
        metavar="[NAME=]MODULE:FACTORY",
        help=f"run the parity properties against this port (env {PORT_ENV}); NAME, the "
        "module it ports (parity check --help lists them), is detected from the port's "
        "weights when not given",
    )
    group.addoption(
        "--parity-weight-map",
        default=os.environ.get(WEIGHT_MAP_ENV),
        metavar="FILE.json",
        help=f"reference parameter -> port weight path (env {WEIGHT_MAP_ENV})",
    )
    group.addoption(
        "--parity-data-format",
        default=os.environ.get(DATA_FORMAT_ENV),
        choices=["channels_last", "channels_first"],
        help=f"the layout the port reads and writes (env {DATA_FORMAT_ENV})",
    )
    group.addoption(
        "--parity-examples",
        type=int,
        default=os.environ.get(EXAMPLES_ENV),
        metavar="N",
        help=f"examples per property (default: the Hypothesis profile's; env {EXAMPLES_ENV}): "
        "a profile derived from the loaded one",
    )


def _options(config) -> tuple[str | None, str | None, str | None]:
    return (
        config.getoption("parity_port"),
        config.getoption("parity_weight_map"),
        config.getoption("parity_data_format"),
    )


@pytest.hookimpl(trylast=True)  # after Hypothesis has loaded its profile
def pytest_configure(config):
    examples = config.getoption("parity_examples")
    if examples is not None:
        if examples < 1:
            raise pytest.UsageError(f"--parity-examples must be at least 1, got {examples}")
        _load_profile_with(examples)
    port = _options(config)[0]
    if port is not None:
        _load_port(config)  # a port that cannot be loaded is a usage error, before collection


def _load_profile_with(examples: int) -> None:
    """The loaded Hypothesis profile with another example count, loaded in its place (the
    properties read their count from the profile)."""
    from hypothesis import settings

    derived = f"{settings.get_current_profile_name()} ({examples} examples)"
    settings.register_profile(derived, settings(settings(), max_examples=examples))
    settings.load_profile(derived)


def _load_port(config):
    from parity.backends.quiet import import_keras_quietly
    from parity.backends.which_keras import keras_backend_problem
    from parity.core.errors import CannotCheck, PortError
    from parity.frontends.pytest.properties import pairs_under_test

    if keras_backend_problem():
        raise pytest.UsageError(keras_backend_problem())
    import_keras_quietly()
    try:
        return pairs_under_test(*_options(config))
    except (CannotCheck, PortError) as error:
        raise pytest.UsageError(f"--parity-port {_options(config)[0]}: {error}") from None


def _installed(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def pytest_report_header(config):
    from hypothesis import settings

    port = _options(config)[0]
    current = settings()
    examples = current.max_examples
    tensorflow = _installed("tensorflow") or _installed("tensorflow-cpu")
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    if port is not None:
        from parity.backends.protocol import port_framework

        backend = port_framework().backend
    return [
        f"danet-parity {_installed('danet-parity')}: port under test: "
        + (
            port
            or "none given with --parity-port (ports your tests pass to check_port are listed "
            "at the end; the bundled ports where a suite runs them)"
        ),
        f"danet-parity: hypothesis profile {settings.get_current_profile_name()!r}, "
        f"{examples} examples per property, derandomize={current.derandomize}; "
        f"torch {_installed('torch')}, tensorflow {tensorflow}, keras {_installed('keras')} "
        f"(backend {backend})",
    ]


def pytest_generate_tests(metafunc):
    """``parity_pair``: the port under test, or the bundled ports without one."""
    if "parity_pair" not in metafunc.fixturenames:
        return
    from parity.frontends.pytest.properties import pairs_under_test

    pairs = pairs_under_test(*_options(metafunc.config))
    metafunc.parametrize("parity_pair", pairs, ids=[pair.name for pair in pairs])


def _is_property(item, properties) -> bool:
    function = getattr(item, "function", None)
    return any(function is p or getattr(function, "__wrapped__", None) is p for p in properties)


@pytest.hookimpl(tryfirst=True)  # before -k and -m deselect
def pytest_collection_modifyitems(session, config, items):
    """With a port given, add the properties, unless a test module already runs them."""
    if _options(config)[0] is None:
        return
    from pathlib import Path

    from parity.frontends.pytest import properties

    if any(_is_property(item, properties.PROPERTIES) for item in items):
        return
    # Named after the port, as its user reads it: my_port:make_pam::test_..._match_reference[pam]
    module = pytest.Module.from_parent(
        session, path=Path(properties.__file__), nodeid=_options(config)[0]
    )
    items.extend(session.genitems(module))


def pytest_terminal_summary(terminalreporter):
    """The ports ``check_port`` checked in the session's own tests (the header knows only
    the one given with --parity-port)."""
    from parity.frontends.pytest import properties

    checked = sorted(properties.CHECKED)
    if checked:
        terminalreporter.write_line(
            "danet-parity: check_port checked " + ", ".join(f"{p} ({m})" for p, m in checked)
        )
