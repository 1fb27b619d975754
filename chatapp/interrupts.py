"""Ctrl+C, remembered: the SIGINT handler that chatapp.launch installs first thing raises
KeyboardInterrupt as Python's own does, and records that it came. A Ctrl+C that lands inside a
C extension's import can come out as that module's ImportError (numpy's "PyCapsule_Import could
not import module"), its KeyboardInterrupt lost; the command line asks interrupt_seen() to report
such an error as the interruption it was."""

from __future__ import annotations

import signal
import threading

_interrupt = threading.Event()


def install() -> None:
    signal.signal(signal.SIGINT, _on_sigint)


def interrupt_seen() -> bool:
    """Whether the user pressed Ctrl+C (SIGINT) since the handler was installed."""
    return _interrupt.is_set()


def _on_sigint(signum, frame) -> None:
    _interrupt.set()
    raise KeyboardInterrupt
