"""A training script pointed at by mistake: importing it ends the process."""

import sys

sys.exit(0)


def make(channels):  # never reached
    raise AssertionError
