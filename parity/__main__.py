"""``python -m parity``: the ``parity`` command."""

from parity.frontends.cli.main import run

run()
