"""Import Keras (and TensorFlow) without the C++ log lines TensorFlow prints as it loads.

TensorFlow 2.21 writes to file descriptor 2 before any log level applies
(``TF_CPP_MIN_LOG_LEVEL`` only takes effect later), so the only way to keep a command's
output readable is to point fd 2 elsewhere for the duration of the import.
"""

from __future__ import annotations

import contextlib
import os
import sys


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
    """The port's framework (``parity.framework``), imported with its log lines silenced."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    from parity.framework import port_framework

    with native_stderr_silenced():
        return port_framework()
