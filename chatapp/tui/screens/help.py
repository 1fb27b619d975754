"""Every key, in one table."""

from __future__ import annotations

from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

from chatapp.tui.keys import APP_KEYS, PROMPT_KEYS


def keys_markdown() -> str:
    rows = [f"| `{key}` | {description} |" for key, _, description, _ in APP_KEYS]
    rows += [f"| `{key}` | {description} |" for key, description in PROMPT_KEYS]
    return "\n".join([
        "# Keys", "", "| Key | Action |", "|---|---|", *rows, "",
        "Select a message with the mouse or Tab, then F9 copies it and F3 inspects its tokens.",
        "", "Esc or F1 closes this screen.",
    ])


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,f1,q", "dismiss", "Close")]

    def compose(self):
        with VerticalScroll(classes="dialog wide"):
            yield Markdown(keys_markdown())
