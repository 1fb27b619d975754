"""What to do when the history file cannot be used: said in one line, with the choices that lose nothing."""

from __future__ import annotations

from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label

from chatapp.history import HistoryUnavailable


class HistoryProblemScreen(ModalScreen[str]):
    """Dismisses with "move-aside" (keep the file under another name, start a fresh one),
    "continue" (chat without saving) or "quit"."""

    BINDINGS = [Binding("escape", "dismiss('continue')", "Continue without saving")]

    def __init__(self, problem: HistoryUnavailable):
        super().__init__()
        self.problem = problem

    def compose(self):
        with Vertical(classes="dialog", id="history-problem"):
            yield Label("The chat history cannot be opened", classes="title")
            yield Label(self.problem.reason, id="reason")
            with Horizontal(classes="buttons"):
                if self.problem.can_move_aside:
                    yield Button("Keep it aside, start fresh", variant="primary", id="move-aside")
                yield Button("Chat without saving", id="continue")
                yield Button("Quit", variant="error", id="quit")

    def on_mount(self) -> None:
        self.query(Button).first().focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id)
