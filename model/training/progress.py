"""A progress line with a rate and an ETA: redrawn in place on a terminal,
printed every few seconds when the output is a file (logs)."""

from __future__ import annotations

import sys
import time


def format_seconds(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes:02d}:{seconds:02d}"


class Progress:
    def __init__(self, total: int, label: str = "", stream=None, file_interval: float = 10.0, start: int = 0):
        self.total = total
        self.label = label
        self.stream = stream or sys.stderr
        self.interactive = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.file_interval = file_interval
        self.start_time = time.monotonic()
        self.start_count = start
        self.last_print = 0.0

    def update(self, count: int, info: str = "") -> None:
        now = time.monotonic()
        done = count - self.start_count
        elapsed = now - self.start_time
        eta = elapsed / done * (self.total - count) if done > 0 else 0.0
        width = 24
        filled = int(width * count / max(self.total, 1))
        line = (
            f"{self.label} [{'#' * filled}{'.' * (width - filled)}] {count}/{self.total} "
            f"{info} elapsed {format_seconds(elapsed)} eta {format_seconds(eta)}"
        )
        if self.interactive:
            self.stream.write("\r" + line + "\033[K")
            self.stream.flush()
        elif now - self.last_print >= self.file_interval or count >= self.total:
            self.stream.write(line + "\n")
            self.stream.flush()
            self.last_print = now

    def close(self) -> None:
        if self.interactive:
            self.stream.write("\n")
            self.stream.flush()

    def message(self, text: str) -> None:
        if self.interactive:
            self.stream.write("\r\033[K")
        self.stream.write(text + "\n")
        self.stream.flush()
