"""What an empty conversation shows: the model, what it is, and the few keys to start with."""

from __future__ import annotations

from textual.content import Content
from textual.widgets import Static

from chatapp.tui.keys import NEWLINE_KEY, key_for

START_KEYS = [  # (action in keys.APP_KEYS, what it does here)
    ("settings", "settings: system prompt, temperature"),
    ("models", "another model"),
    ("inspect", "how each token was drawn"),
    ("help", "every key"),
]
DESCRIPTION_WIDTH = 72  # one line at 80 columns, inside the chat's padding


class Welcome(Static):
    """Short on purpose: at most 10 lines at 80 columns (the model's description is cut to one line)."""

    DEFAULT_CSS = """
    Welcome { height: auto; padding: 1 2; color: $text-muted; }
    """

    def show(self, model_name: str, description: str = "") -> None:
        keys = [f"{key_for(action)} {what}" for action, what in START_KEYS]
        lines = [
            Content.assemble("Chatting with ", (model_name or "no model yet", "bold")),
            *([Content.styled(_one_line(description, DESCRIPTION_WIDTH), "italic")] if description else []),
            Content(""),
            Content(f"Type a message: Enter sends, {NEWLINE_KEY} adds a line."),
            Content(" · ".join(keys[:2])),
            Content(" · ".join(keys[2:])),
        ]
        self.update(Content("\n").join(lines))


def _one_line(text: str, width: int) -> str:
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"
