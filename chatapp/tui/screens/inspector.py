"""The sampling inspector: for each generated token, its top candidates with
their probabilities from the raw logits and after temperature, top-k, top-p
and min-p; the cut ones and the drawn one marked.

A step is a dict from the engine's `inspect` callback:
    {"text": str, "candidates": [{"text", "raw_prob", "final_prob", "drawn"}, ...]}
(final_prob 0 means the filters cut the token.)
"""

from __future__ import annotations

from rich.text import Text
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Label, OptionList
from textual.widgets.option_list import Option


def candidate_verdict(candidate: dict) -> str:
    if candidate.get("drawn"):
        return "drawn"
    return "cut" if candidate.get("final_prob", 0.0) <= 0.0 else "kept"


def token_label(index: int, text: str) -> str:
    return f"{index + 1:>4}  {text!r}"


class InspectorScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,f3", "dismiss", "Close")]

    def __init__(self, steps: list[dict], params_text: str):
        super().__init__()
        self.steps, self.params_text = steps, params_text

    def compose(self):
        with Vertical(classes="dialog wide", id="inspector"):
            yield Label(f"Sampling inspector · {len(self.steps)} tokens · {self.params_text}", classes="title")
            with Horizontal():
                yield OptionList(*[Option(token_label(i, s.get("text", "")), id=str(i)) for i, s in enumerate(self.steps)],
                                 id="tokens")
                yield DataTable(id="candidates", cursor_type="row", zebra_stripes=True)
            yield Label("raw: softmax of the logits · after filters: after temperature, top-k, top-p and min-p "
                        "(0 = cut) · Esc closes", classes="hint")

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("candidate", "raw p", "after filters", "")
        if self.steps:
            self.show_step(0)
            self.query_one(OptionList).highlighted = 0
        self.query_one(OptionList).focus()

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        self.show_step(int(event.option.id))

    def show_step(self, index: int) -> None:
        table = self.query_one(DataTable)
        table.clear()
        for candidate in self.steps[index].get("candidates", []):
            verdict = candidate_verdict(candidate)
            style = {"drawn": "bold green", "cut": "dim strike", "kept": ""}[verdict]
            table.add_row(
                Text(repr(candidate.get("text", "")), style=style),
                f"{candidate.get('raw_prob', 0.0):.3f}",
                f"{candidate.get('final_prob', 0.0):.3f}",
                Text(verdict, style=style),
            )
