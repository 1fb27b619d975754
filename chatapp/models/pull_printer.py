"""How `chatapp pull` shows a pull (chatapp.models.pull's PullEvents): a progress bar with bytes, speed and
time left on a terminal, a plain line every tenth of the way when not on one (a log, a pipe), or one
JSON object per line for scripts (--json)."""

from __future__ import annotations

import json
import shutil
import sys
import time
from typing import TextIO

from chatapp.models.listing import human_size
from chatapp.models.pull import PullEvent

BAR_WIDTH = 24
JSON_PROGRESS_EVERY_S = 0.5
LINE_EVERY_FRACTION = 0.1  # plain lines: one per tenth of the way
LINE_EVERY_S = 30.0  # ... or at least this often on a slow link


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "--"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def progress_text(data: dict) -> str:
    done, total = data["done_bytes"], data["total_bytes"]
    percent = 100 * done / total if total else 100.0
    speed = f"{human_size(data['bytes_per_second'])}/s" if data["bytes_per_second"] else "--/s"
    return f"{percent:5.1f}%  {human_size(done)} / {human_size(total)}  {speed}  ETA {duration(data['eta_seconds'])}"


class PullPrinter:
    """A callable for pull(on_event=...). mode: "terminal", "lines" or "json"."""

    def __init__(self, out: TextIO, mode: str):
        self.out, self.mode = out, mode
        self.bar_shown = False
        self.last_json = 0.0
        self.last_line = (time.monotonic(), 0.0)  # time, fraction of the last plain progress line

    @classmethod
    def for_stdout(cls, json_lines: bool = False) -> PullPrinter:
        mode = "json" if json_lines else ("terminal" if sys.stdout.isatty() else "lines")
        return cls(sys.stdout, mode)

    def __call__(self, event: PullEvent) -> None:
        if self.mode == "json":
            return self.json_line(event)
        if event.kind == "progress":
            return self.bar(event.data) if self.mode == "terminal" else self.line(event.data)
        self.end_bar()
        indent = "  " if event.kind in ("note", "verified", "checked") else ""
        prefix = "pulling " if event.kind == "file" else ""
        self.write(f"{indent}{prefix}{event.message}\n")

    def write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    def json_line(self, event: PullEvent) -> None:
        now = time.monotonic()
        if event.kind == "progress":
            finished = event.data["done_bytes"] >= event.data["total_bytes"]
            if now - self.last_json < JSON_PROGRESS_EVERY_S and not finished:
                return
            self.last_json = now
        self.write(json.dumps(event.record()) + "\n")

    def bar(self, data: dict) -> None:
        total = data["total_bytes"] or 1
        filled = int(BAR_WIDTH * min(data["done_bytes"] / total, 1.0))
        line = f"  [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {progress_text(data)}"
        width = shutil.get_terminal_size((80, 24)).columns - 1
        self.write("\r" + line[:width].ljust(min(width, len(line) + 2)))
        self.bar_shown = True

    def end_bar(self) -> None:
        if self.bar_shown:
            self.write("\n")
            self.bar_shown = False

    def line(self, data: dict) -> None:
        now, fraction = time.monotonic(), data["done_bytes"] / (data["total_bytes"] or 1)
        last_time, last_fraction = self.last_line
        if fraction >= 1.0 or fraction - last_fraction >= LINE_EVERY_FRACTION or now - last_time >= LINE_EVERY_S:
            if last_fraction < 1.0:
                self.write(f"  {progress_text(data)}\n")
            self.last_line = (now, fraction)

    def interrupted(self, spec: str, kept: int) -> None:
        self.end_bar()
        message = f"stopped: {human_size(kept)} kept; `chatapp pull {spec}` goes on from there"
        if self.mode == "json":
            self.write(json.dumps({"event": "interrupted", "message": message, "kept_bytes": kept}) + "\n")
        else:
            sys.stderr.write(message + "\n")

    def failed(self, error: Exception) -> None:
        self.end_bar()
        if self.mode == "json":
            self.write(json.dumps({"event": "error", "message": str(error)}) + "\n")

    def close(self) -> None:
        self.end_bar()
