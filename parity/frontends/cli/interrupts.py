"""Ctrl-C during a check: one line and status 130, whatever was running when it came."""

from __future__ import annotations

import signal
import sys
import threading


class Interrupts:
    """Ctrl-C as a flag as well as an exception. Python raises KeyboardInterrupt in whatever
    code runs when the signal arrives, and one raised inside a garbage-collection callback
    (JAX registers one) is swallowed: the flag is checked again between examples."""

    def __init__(self):
        self.seen = False
        self.previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread() and (
            signal.getsignal(signal.SIGINT) is signal.default_int_handler
        ):
            self.previous = signal.signal(signal.SIGINT, self._handle)
            self.previous_hook, sys.unraisablehook = sys.unraisablehook, self._unraisable
        return self

    def __exit__(self, *exc_info):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
            sys.unraisablehook = self.previous_hook
            self.previous = None
        self.seen = False

    def _unraisable(self, unraisable):
        """A swallowed Ctrl-C is not worth a traceback: the flag ends the run."""
        if not issubclass(unraisable.exc_type, KeyboardInterrupt):
            self.previous_hook(unraisable)

    def _handle(self, signum, frame):
        self.seen = True
        raise KeyboardInterrupt

    def check(self) -> None:
        if self.seen:
            raise KeyboardInterrupt


INTERRUPTS = Interrupts()
