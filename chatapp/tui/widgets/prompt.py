"""The message input: Enter sends, Ctrl+J adds a line, Up on an empty input recalls.

Shift+Enter adds a line only where the terminal tells it from Enter (the kitty
keyboard protocol); most terminals, and tmux, send it as Enter, which sends.
In the chat screen Enter reaches the screen's priority binding first (so that the
App handles Enter and Ctrl+C in the order they were pressed); on its own the
input posts Submitted.
"""

from __future__ import annotations

from textual import events
from textual.message import Message
from textual.widgets import TextArea

from chatapp.tui.keys import NEWLINE_KEY

PLACEHOLDER = f"Enter (or Shift+Enter) sends · {NEWLINE_KEY.title()}: new line"


class PromptInput(TextArea):
    class Submitted(Message):
        def __init__(self, text: str):
            super().__init__()
            self.text = text

    def __init__(self, **kwargs):
        kwargs.setdefault("placeholder", PLACEHOLDER)
        super().__init__(soft_wrap=True, tab_behavior="focus", show_line_numbers=False, **kwargs)
        self.earlier_prompts: list[str] = []
        self._recall_index: int | None = None

    async def _on_key(self, event: events.Key) -> None:
        if event.key == "enter":
            event.stop()
            event.prevent_default()
            if self.text.strip():
                self.post_message(self.Submitted(self.text))
            return
        if event.key in ("shift+enter", NEWLINE_KEY):
            event.stop()
            event.prevent_default()
            self.insert("\n")
            return
        if event.key == "up" and self._may_recall() and self.earlier_prompts:
            event.stop()
            event.prevent_default()
            self._recall(-1)
            return
        if event.key == "down" and self._recall_index is not None:
            event.stop()
            event.prevent_default()
            self._recall(+1)
            return
        self._recall_index = None
        await super()._on_key(event)

    def _may_recall(self) -> bool:
        return not self.text or self._recall_index is not None

    def _recall(self, step: int) -> None:
        count = len(self.earlier_prompts)
        index = count if self._recall_index is None else self._recall_index
        index = max(0, min(count, index + step))
        self._recall_index = None if index == count else index
        self.text = "" if index == count else self.earlier_prompts[index]
        self.move_cursor(self.document.end)

    def remember(self, prompt: str) -> None:
        if not self.earlier_prompts or self.earlier_prompts[-1] != prompt:
            self.earlier_prompts.append(prompt)
        self._recall_index = None
