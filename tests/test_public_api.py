"""The public API: every name in ``parity.__all__`` resolves to what a module defines,
and ``import parity`` loads no framework (the command's usage errors stay instant)."""

import importlib
import json
import subprocess
import sys

import pytest

import parity


@pytest.mark.parametrize("name", parity.__all__)
def test_every_public_name_resolves_to_its_home_modules(name):
    value = getattr(parity, name)  # AttributeError, ImportError: an export gone stale
    home = importlib.import_module(value.__module__)
    assert getattr(home, name) is value
    assert name in dir(parity)


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'Chekcer'"):
        parity.Chekcer  # noqa: B018


def test_importing_parity_loads_no_framework():
    script = (
        "import json, sys, parity; "
        "print(json.dumps(sorted(m for m in ('torch', 'tensorflow', 'keras', 'jax') "
        "if m in sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
