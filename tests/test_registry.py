"""The registry: every file in ``parity/pairs/`` is a pair, found by itself, and the command
offers each without naming any."""

import json
import pkgutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import parity.pairs
from parity.core import registry
from parity.frontends.cli.arguments import build_parser

ROOT = Path(__file__).resolve().parents[1]


def test_every_file_in_the_package_registers_one_pair():
    files = {info.name for info in pkgutil.iter_modules(parity.pairs.__path__)}
    assert len(registry.names()) == len(files)
    assert set(registry.names()) >= {"pam", "cam", "head", "cbam"}


def test_importing_the_pairs_imports_no_framework():
    """The command answers usage errors before TensorFlow and PyTorch are imported."""
    script = textwrap.dedent(
        f"""
        import json, sys
        sys.path.insert(0, {str(ROOT)!r})
        from parity.core import registry
        registry.definitions()
        print(json.dumps(sorted(m for m in ("tensorflow", "torch", "keras", "jax")
                                if m in sys.modules)))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


@pytest.mark.parametrize("command", ["check", "bench"])
def test_the_command_offers_every_registered_pair(command, capsys):
    """``check`` every pair; ``bench`` those that say what to time."""
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    definitions = registry.definitions().values()
    for definition in definitions:
        assert (definition.name in text) == (command == "check" or definition.bench is not None)


def test_convert_offers_every_pair_with_a_checkpoint_spec():
    parser = build_parser()
    args = parser.parse_args(["convert", "a.pth", "b.weights.h5"])
    assert args.module == next(
        n for n, d in registry.definitions().items() if d.checkpoint and d.checkpoint.default
    )
    for name, definition in registry.definitions().items():
        if definition.checkpoint is not None:
            assert parser.parse_args(["convert", "a", "b", "--module", name]).module == name


def test_an_unknown_name_is_a_typed_error():
    with pytest.raises(registry.UnknownPair) as caught:
        registry.definition("sam")
    assert "expected one of" in str(caught.value)
