"""Every key, in one table that fits an 80 x 40 terminal."""

from __future__ import annotations

from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Label, Markdown

from chatapp.tui.keys import APP_KEYS, NEWLINE_KEY, PROMPT_KEYS, key_for


def _two_per_row(pairs: list[tuple[str, str]]) -> list[str]:
    """Markdown table rows with two (key, action) pairs side by side: half the height of one per row."""
    cells = [f"`{key}` | {description}" for key, description in pairs]
    if len(cells) % 2:
        cells.append(" | ")
    return [f"| {left} | {right} |" for left, right in zip(cells[::2], cells[1::2])]


def keys_markdown() -> str:
    pairs = [(key, description) for key, _, description, _ in APP_KEYS] + list(PROMPT_KEYS)
    return "\n".join(
        [
            "| Key | Action | Key | Action |",
            "|---|---|---|---|",
            *_two_per_row(pairs),
            "",
            f"**Enter** sends. Most terminals send **Shift+Enter** as Enter, so it sends too: "
            f"`{NEWLINE_KEY}` adds a new line in every terminal.",
            "",
            f"Select a message with the mouse or Tab: `{key_for('copy_message')}` copies it, "
            f"`{key_for('inspect')}` inspects its tokens, `{key_for('edit_message')}` edits it and "
            f"`{key_for('regenerate')}` answers it again (each a new branch: the old one stays), "
            f"`{key_for('previous_branch')}` / `{key_for('next_branch')}` (or a click on ‹ branch 2/3 ›) "
            f"step between branches, `{key_for('fork')}` forks the chat there. "
            f"`{key_for('stop_or_quit')}` stops a streaming reply; with none streaming it quits. "
            '`ctrl+p` also applies a preset ("Preset: NAME"): a system prompt and sampling, saved '
            f"from `{key_for('settings')}`. Esc or F1 closes this.",
        ]
    )


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,f1,q", "dismiss", "Close")]

    def compose(self):
        with VerticalScroll(classes="dialog", id="help"):
            yield Label("Keys", classes="title")
            yield Markdown(keys_markdown())
