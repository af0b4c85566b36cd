"""The documentation holds to what the code does: the README stays short, every command it
and the docs site show is one the command accepts, and the API reference lists every name
``parity`` exports."""

import re
import shlex
from pathlib import Path

import pytest

import parity
from parity.frontends.cli.arguments import build_parser

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```[a-z]*\n(.*?)^```", re.S | re.M)
COMMAND = re.compile(r"^(\$ )?([A-Z_]+=\S+ )*parity [a-z]")  # not the command's output


def _commands():
    for page in PAGES:
        for block in FENCE.findall(page.read_text()):
            for line in block.splitlines():
                if not COMMAND.match(line):
                    continue
                words = shlex.split(line.removeprefix("$ ").split(" #")[0])
                while words and "=" in words[0]:  # KERAS_BACKEND=jax parity check ...
                    words = words[1:]
                if words[:1] == ["parity"] and len(words) > 1:
                    yield pytest.param(words[1:], id=f"{page.name}: {' '.join(words)}")


def test_the_readme_is_short():
    lines = (ROOT / "README.md").read_text().count("\n")
    assert lines <= 250, f"README.md has {lines} lines; the rest belongs in docs/"


@pytest.mark.parametrize("command", list(_commands()))
def test_every_command_shown_is_accepted(command):
    """Parsed as the command parses it (its choices, types and required arguments)."""
    build_parser().parse_args(command)


def test_the_api_reference_lists_every_exported_name():
    listed = set(re.findall(r"^::: [\w.]+\.(\w+)$", (ROOT / "docs" / "api.md").read_text(), re.M))
    assert listed == set(parity.__all__)
