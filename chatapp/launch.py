"""The `chatapp` command's entry point (pyproject's console script, `python -m
chatapp` and the desktop bundle): chatapp.cli.main, with a Ctrl+C that comes
while the program is still importing (its first ~100 ms, before cli.main's own
handling is in place) ending it quietly with exit code 130 instead of a traceback.
Before this module runs, a Ctrl+C is CPython's own to report (its start, `site`)."""

from __future__ import annotations

import sys

from chatapp import EXIT_INTERRUPTED, interrupts


def main(argv: list[str] | None = None) -> int:
    try:
        interrupts.install()
        from chatapp.cli import main as run_cli

        return run_cli(argv)
    except KeyboardInterrupt:
        sys.stderr.write("\ninterrupted\n")
        return EXIT_INTERRUPTED
