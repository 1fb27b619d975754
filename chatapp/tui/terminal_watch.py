"""The terminal gone. A TUI whose terminal closes (its window, an ssh session, a tmux server killed)
normally gets SIGHUP and ends; one that does not (started under `make chat`, say, whose make got it
instead) would read an endless end of file and spin a core. So the app looks once a second: once a
terminal has hung up, its attributes cannot be read any more."""

from __future__ import annotations

import os
import sys


def terminal_fd() -> int | None:
    """The terminal the app reads its keys from, when it runs in one (not under Pilot, nor on Windows)."""
    try:
        import termios  # noqa: F401 - POSIX only
    except ImportError:
        return None
    stream = sys.__stdin__
    try:
        fd = stream.fileno() if stream is not None else -1
        return fd if fd >= 0 and os.isatty(fd) else None
    except (OSError, ValueError):
        return None


def hung_up(fd: int) -> bool:
    import termios

    try:
        termios.tcgetattr(fd)
    except termios.error:
        return True
    return False
