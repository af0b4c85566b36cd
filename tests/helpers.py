"""Helpers shared by the tests of the ``parity`` command."""

from parity.frontends.cli.main import main


def run_cli(argv, capsys):
    """Exit status, stdout and stderr of ``parity ARGV``, whether main() returns the status
    or argparse exits with it."""
    try:
        status = main(argv)
    except SystemExit as exit_info:
        status = exit_info.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err
