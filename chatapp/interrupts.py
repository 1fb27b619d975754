"""Ctrl+C, remembered: the SIGINT handler that chatapp.launch installs first thing raises
KeyboardInterrupt as Python's own does, and records that it came. A Ctrl+C that lands inside a
C extension's import can come out as that module's ImportError (numpy's "PyCapsule_Import could
not import module"), its KeyboardInterrupt lost; the command line asks interrupt_seen() to report
such an error as the interruption it was."""

from __future__ import annotations

import signal
import sys
import threading

from chatapp import EXIT_INTERRUPTED

_interrupt = threading.Event()


def install() -> None:
    signal.signal(signal.SIGINT, _on_sigint)


def install_until_main() -> None:
    """For the moment between importing the entry point and entering its main() (the console
    script's `sys.exit(main())`): a Ctrl+C there ends the program quietly. main() installs the
    remembering handler first thing; an embedding program's own handler is left alone."""
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _exit_before_main)


def interrupt_seen() -> bool:
    """Whether the user pressed Ctrl+C (SIGINT) since the handler was installed."""
    return _interrupt.is_set()


def _on_sigint(signum, frame) -> None:
    _interrupt.set()
    raise KeyboardInterrupt


def _exit_before_main(signum, frame) -> None:
    _interrupt.set()
    sys.stderr.write("\ninterrupted\n")
    raise SystemExit(EXIT_INTERRUPTED)
