"""Copy text where the user can paste it: the system clipboard through its own tool when there is one,
else the terminal's clipboard (OSC 52) and a file, since a terminal may drop OSC 52 without a word."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from chatapp.paths import data_dir

CLIPBOARD_FILE = "clipboard.txt"
TOOL_TIMEOUT_S = 2.0

# (tool, arguments, the environment variable it needs to reach a clipboard, or None)
CLIPBOARD_TOOLS = [
    ("wl-copy", [], "WAYLAND_DISPLAY"),
    ("xclip", ["-selection", "clipboard"], "DISPLAY"),
    ("xsel", ["--clipboard", "--input"], "DISPLAY"),
    ("pbcopy", [], None),
    ("clip.exe", [], None),
]


def copy_text(app, text: str) -> str:
    """Copy text and return the notice that says where it went.

    The app's own clipboard (what Ctrl+V pastes in the app) always gets it."""
    app.copy_to_clipboard(text)  # also OSC 52 to the terminal
    tool = _copy_with_a_tool(text)
    if tool:
        return f"Copied to the clipboard ({tool})"
    sent = "Sent to the terminal (OSC 52; tmux drops it unless set-clipboard is on)"
    try:
        saved = _save_to_file(text)
    except OSError as error:
        return f"{sent}; a copy could not be saved to a file: {error}"
    return f"{sent} and saved to {_shown_path(saved)}"


def _copy_with_a_tool(text: str) -> str | None:
    for tool, arguments, needs in CLIPBOARD_TOOLS:
        program = shutil.which(tool)
        if program is None or (needs and not os.environ.get(needs)):
            continue
        # clip.exe reads the console code page unless the text is UTF-16 with its byte order mark
        data = ("\ufeff" + text).encode("utf-16-le") if tool == "clip.exe" else text.encode("utf-8")
        try:
            # xclip and wl-copy stay behind to serve the clipboard: their output must not be a pipe we wait on
            finished = subprocess.run(
                [program, *arguments],
                input=data,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=TOOL_TIMEOUT_S,
            )
        except (OSError, subprocess.SubprocessError):
            continue
        if finished.returncode == 0:
            return tool
    return None


def _save_to_file(text: str) -> Path:
    path = data_dir() / CLIPBOARD_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.chmod(path, 0o600)  # an older file may have been made with looser rights
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(text)
    return path


def _shown_path(path: Path) -> str:
    home = Path.home()
    try:
        return "~/" + str(path.relative_to(home))
    except ValueError:
        return str(path)
