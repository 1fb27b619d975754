"""Installed programs driven as a user would (the desktop bundle, the light install): a server started
on a free port, and the text of a TUI screenshot."""

from __future__ import annotations

import html
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def serving(program: Path, env: dict, cwd: Path, *arguments: str) -> Iterator[str]:
    """`PROGRAM serve ARGUMENTS --port P` until it listens (60 s at most); yields its base URL, then stops it."""
    port = free_port()
    server = subprocess.Popen(
        [str(program), "serve", *arguments, "--port", str(port)],
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and server.poll() is None:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.2)
        assert server.poll() is None, server.stderr.read() if server.stderr else ""
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.terminate()
        server.wait(timeout=30)


def screenshot_settings(folder: Path) -> dict[str, str]:
    """The environment that makes a Textual app save a screenshot (110x30) as folder/tui.svg after 5 s."""
    return {
        "TEXTUAL_SCREENSHOT": "5",
        "TEXTUAL_SCREENSHOT_LOCATION": str(folder),
        "TEXTUAL_SCREENSHOT_FILENAME": "tui.svg",
        "COLUMNS": "110",
        "LINES": "30",
    }


def screenshot_text(svg: Path) -> str:
    """What a Textual screenshot (SVG) says, as plain text."""
    text = "".join(re.findall(r"<text[^>]*>(.*?)</text>", svg.read_text(encoding="utf-8"), re.S))
    return html.unescape(text).replace("\xa0", " ")
