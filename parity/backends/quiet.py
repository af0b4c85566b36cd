"""What the frameworks say that a check expects: TensorFlow's C++ log lines as Keras loads,
Keras' warning of a softmax over one position.

TensorFlow 2.21 writes to file descriptor 2 before any log level applies
(``TF_CPP_MIN_LOG_LEVEL`` only takes effect later), so the only way to keep a command's
output readable is to point fd 2 elsewhere for the duration of the import.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings

SOFTMAX_OVER_ONE = "You are using a softmax over axis"
"""Keras' warning for a softmax over an axis of length one: PAM on a 1x1 map, CAM with one
channel. Expected in a check, not a bug (``pyproject.toml`` filters it for the suite)."""


@contextlib.contextmanager
def softmax_over_one_expected():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=SOFTMAX_OVER_ONE)
        yield


@contextlib.contextmanager
def native_stderr_silenced():
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # stderr replaced, e.g. captured
        yield
        return
    sys.stderr.flush()
    saved, devnull = os.dup(fd), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    try:
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)
        os.close(devnull)


def import_keras_quietly():
    """The port's framework (``parity.backends.protocol``), imported with its log lines silenced."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    from parity.backends.protocol import port_framework

    with native_stderr_silenced():
        return port_framework()
