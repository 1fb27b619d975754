"""What an empty conversation shows: the model, what it is, and the few keys to start with."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from chatapp.tui.keys import NEWLINE_KEY, key_for

START_KEYS = [  # (action in keys.APP_KEYS, what it does here)
    ("settings", "settings: system prompt, temperature"),
    ("models", "pick another model"),
    ("inspect", "see how each token was drawn"),
    ("help", "every key"),
]


class Welcome(Static):
    """Short on purpose: at most 10 lines at 80 columns (the model's description is cut to one line)."""

    DEFAULT_CSS = """
    Welcome { height: auto; padding: 1 2; color: $text-muted; }
    """

    def show(self, model_name: str, description: str = "") -> None:
        text = Text()
        text.append("Chatting with ")
        text.append(model_name or "no model yet", style="bold")
        text.append("\n")
        if description:
            text.append(_one_line(description, 72) + "\n", style="italic")
        text.append(f"\nType a message: Enter sends, {NEWLINE_KEY} adds a line.\n")
        keys = [f"{key_for(action)} {what}" for action, what in START_KEYS]
        text.append(" · ".join(keys[:2]) + "\n" + " · ".join(keys[2:]))
        self.update(text)


def _one_line(text: str, width: int) -> str:
    line = " ".join(text.split())
    return line if len(line) <= width else line[:width - 1] + "…"
