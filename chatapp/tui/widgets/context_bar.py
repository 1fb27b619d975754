"""How much of the model's context the conversation uses, and how many old turns no longer fit."""

from __future__ import annotations

from textual.widgets import Static

BAR_WIDTH = 10


class ContextBar(Static):
    def show(self, used: int, context_length: int, dropped: int, model: str, trained_context_length: int | None = None) -> None:
        share = min(1.0, used / context_length) if context_length else 0.0
        filled = round(share * BAR_WIDTH)
        bar = "█" * filled + "░" * (BAR_WIDTH - filled)
        text = f"context {bar} {used}/{context_length} tokens ({share:.0%})"
        if trained_context_length and trained_context_length != context_length:
            text += f" (the model was trained for {trained_context_length:,})"
        text += f" · {model}"
        if dropped:
            text += f" · {dropped} earliest message(s) no longer fit and are not sent"
        self.update(text)
        self.set_class(dropped > 0, "overflowing")

    def show_text(self, text: str) -> None:
        self.update(text)
