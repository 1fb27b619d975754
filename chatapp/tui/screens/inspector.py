"""The sampling inspector: for each generated token, its rank under the raw
logits and its top candidates with their probabilities from the raw logits and
after the penalty, temperature, top-k, top-p and min-p; the drawn one marked,
and for each cut one the filter that cut it.

A step is a dict from the engine's `inspect` callback (inspection_step in
model/inference/sampling.py):
    {"token_id", "text", "rank", "candidates": [{"id", "text", "raw_prob", "final_prob", "drawn", "cut_by"}, ...]}
Steps stored before rank and cut_by existed lack them (or hold -1 / None): they
show without them. A control token (an end of turn, a role marker) is shown by its name, like
<|im_end|>, where the step says it is one ("control": True, its text the name); a token whose
text is empty is one whose name the step did not keep. A step of the reply's thinking (a
reasoning model's) has "thinking": True: it is listed dim and marked "thinking", and its summary says so.
"""

from __future__ import annotations

from rich.text import Text
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Label, OptionList
from textual.widgets.option_list import Option


def candidate_verdict(candidate: dict) -> str:
    """ "drawn", "kept", "cut by top-k" (or another filter), or "cut" when the step does not say which."""
    if candidate.get("drawn"):
        return "drawn"
    if candidate.get("final_prob", 0.0) > 0.0:
        return "kept"
    cut_by = candidate.get("cut_by")
    return f"cut by {cut_by}" if cut_by else "cut"


def step_rank(step: dict) -> int | None:
    rank = step.get("rank")
    return rank if isinstance(rank, int) and rank > 0 else None


THINKING_MARK = "thinking"


def shown_token(entry: dict) -> str:
    """A step's or a candidate's token as the inspector writes it: text quoted ('Hello'), a control
    token by its name, unquoted (<|im_end|>), and one whose name is not known by its id."""
    text = str(entry.get("text", ""))
    if entry.get("control") and text:
        return text
    if text == "":
        token_id = entry.get("token_id", entry.get("id"))
        return f"<control token {token_id}>" if isinstance(token_id, int) else "<control token>"
    return repr(text)


def token_label(index: int, step: dict) -> str:
    label = f"{index + 1:>4}  {shown_token(step)}"
    rank = step_rank(step)
    label = f"{label}  #{rank}" if rank and rank > 1 else label  # a draw that was not the likeliest stands out
    return f"{label}  · {THINKING_MARK}" if step.get("thinking") else label


def token_prompt(index: int, step: dict) -> Text:
    """The token's line in the list: a thinking token dim (as the thinking block shows it)."""
    return Text(token_label(index, step), style="dim italic" if step.get("thinking") else "")


def step_summary(step: dict) -> str:
    rank = step_rank(step)
    drawn = f"drawn: {shown_token(step)}" + (f" ({THINKING_MARK})" if step.get("thinking") else "")
    if rank is None:
        return drawn
    return f"{drawn} · the {'likeliest' if rank == 1 else ordinal(rank) + ' likeliest'} token under the raw logits"


def tokens_title(steps: list[dict]) -> str:
    thinking = sum(1 for step in steps if step.get("thinking"))
    return f"{len(steps)} tokens" + (f" ({thinking} thinking)" if thinking else "")


def ordinal(number: int) -> str:
    suffix = "th" if 10 <= number % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(number % 10, "th")
    return f"{number:,}{suffix}"


class InspectorScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,f3", "dismiss", "Close")]

    def __init__(self, steps: list[dict], params_text: str):
        super().__init__()
        self.steps, self.params_text = steps, params_text

    def compose(self):
        with Vertical(classes="dialog wide", id="inspector"):
            yield Label(f"Sampling inspector · {tokens_title(self.steps)} · {self.params_text}", classes="title")
            with Horizontal():
                yield OptionList(
                    *[Option(token_prompt(i, s), id=str(i)) for i, s in enumerate(self.steps)], id="tokens"
                )
                with Vertical(id="step"):
                    yield Label("", id="step-summary")
                    yield DataTable(id="candidates", cursor_type="row", zebra_stripes=True)
            yield Label(
                "raw p: from the logits · after filters: penalty, temperature, top-k, top-p, min-p, "
                "in that order · #n: drawn as the n-th likeliest · Esc closes",
                classes="hint",
            )

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("candidate", "raw p", "after filters", "")
        if self.steps:
            self.show_step(0)
            self.query_one(OptionList).highlighted = 0
        self.query_one(OptionList).focus()

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        if event.option.id is not None:
            self.show_step(int(event.option.id))

    def show_step(self, index: int) -> None:
        step = self.steps[index]
        self.query_one("#step-summary", Label).update(step_summary(step))
        table = self.query_one(DataTable)
        table.clear()
        for candidate in step.get("candidates", []):
            verdict = candidate_verdict(candidate)
            cut = verdict.startswith("cut")
            style = "bold green" if verdict == "drawn" else "dim" if cut else ""
            table.add_row(
                Text(shown_token(candidate), style=style + " strike" if cut else style),
                f"{candidate.get('raw_prob', 0.0):.3f}",
                f"{candidate.get('final_prob', 0.0):.3f}",
                Text(verdict, style=style),
            )
