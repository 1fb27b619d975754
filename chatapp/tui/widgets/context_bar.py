"""How much of the model's context the next reply will use: the prompt, the room kept for the reply, and
how many early messages no longer fit. One line, fitted to the bar's width: the numbers always show, the
model's name is what gets shortened."""

from __future__ import annotations

from dataclasses import dataclass

from textual import events
from textual.content import Content
from textual.widgets import Static

PROMPT_GLYPH, RESERVE_GLYPH, FREE_GLYPH = "█", "▒", "░"
PROMPT_STYLE, RESERVE_STYLE, FREE_STYLE = "$accent", "$secondary", "$text-muted 50%"
BAR_WIDTH, NARROW_BAR_WIDTH = 12, 8
MIN_MODEL_WIDTH = 6  # a name cut shorter than this says nothing: it is left out instead
SEPARATOR = " · "


@dataclass
class ContextUse:
    prompt_tokens: int
    reserve_tokens: int
    context_length: int
    dropped: int
    model: str
    trained_context_length: int | None = None


class ContextBar(Static):
    DEFAULT_CSS = """
    ContextBar { height: 1; }
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.use: ContextUse | None = None

    def show(
        self,
        prompt_tokens: int,
        reserve_tokens: int,
        context_length: int,
        dropped: int,
        model: str,
        trained_context_length: int | None = None,
    ) -> None:
        """prompt_tokens: what is sent; reserve_tokens: the room kept for the reply; dropped: how many early
        messages no longer fit and are not sent."""
        self.use = ContextUse(prompt_tokens, reserve_tokens, context_length, dropped, model, trained_context_length)
        self.set_class(dropped > 0, "overflowing")
        self.update(context_line(self.use, self._width()), layout=False)

    def show_text(self, text: str) -> None:
        self.use = None
        self.set_class(False, "overflowing")
        self.update(text)

    def on_resize(self, event: events.Resize) -> None:
        if self.use is not None:
            self.update(context_line(self.use, self._width()), layout=False)

    def _width(self) -> int:
        return self.content_size.width or 80


def context_bar(use: ContextUse, width: int) -> Content:
    """The bar: the prompt's share, then the reply's reserve, then what is free, each its own glyph and colour."""
    total = max(use.context_length, 1)
    prompt_cells = min(width, round(width * use.prompt_tokens / total))
    if use.prompt_tokens > 0:
        prompt_cells = max(prompt_cells, 1)
    reserve_cells = min(width - prompt_cells, round(width * use.reserve_tokens / total))
    if use.reserve_tokens > 0 and prompt_cells + reserve_cells < width:
        reserve_cells = max(reserve_cells, 1)
    free_cells = width - prompt_cells - reserve_cells
    return Content.assemble(
        (PROMPT_GLYPH * prompt_cells, PROMPT_STYLE),
        (RESERVE_GLYPH * reserve_cells, RESERVE_STYLE),
        (FREE_GLYPH * free_cells, FREE_STYLE),
    )


def _share(use: ContextUse) -> str:
    share = (use.prompt_tokens + use.reserve_tokens) / use.context_length if use.context_length else 0.0
    return f"{share:.0%}"


def _tiers(use: ContextUse) -> list[list]:
    """The line without the model's name, from the most words to the fewest."""
    p, r, c = f"{use.prompt_tokens:,}", f"{use.reserve_tokens:,}", f"{use.context_length:,}"
    trained = (
        f" (trained for {use.trained_context_length:,})"
        if use.trained_context_length and use.trained_context_length != use.context_length
        else ""
    )
    dropped_long = ""
    if use.dropped == 1:
        dropped_long = f"{SEPARATOR}the earliest message no longer fits and is not sent"
    elif use.dropped:
        dropped_long = f"{SEPARATOR}the {use.dropped} earliest messages no longer fit and are not sent"
    dropped_short = f"{SEPARATOR}{use.dropped} dropped" if use.dropped else ""
    dropped = ("$warning bold",)
    return [
        [
            "context ",
            context_bar(use, BAR_WIDTH),
            f" {p} prompt + {r} reply/{c} tokens ({_share(use)}){trained}",
            (dropped_long, *dropped),
        ],
        [
            "context ",
            context_bar(use, BAR_WIDTH),
            f" {p} prompt + {r} reply/{c} tokens ({_share(use)})",
            (dropped_short, *dropped),
        ],
        [
            "context ",
            context_bar(use, NARROW_BAR_WIDTH),
            f" {p}+{r}/{c} tokens {_share(use)}",
            (dropped_short, *dropped),
        ],
        ["context ", context_bar(use, NARROW_BAR_WIDTH), f" {p}+{r}/{c} {_share(use)}", (dropped_short, *dropped)],
        [context_bar(use, NARROW_BAR_WIDTH), f" {p}+{r}/{c} {_share(use)}", (dropped_short, *dropped)],
        [f"{p}+{r}/{c}", (dropped_short, *dropped)],
    ]


def _length(parts: list) -> int:
    return sum(
        part.cell_length if isinstance(part, Content) else len(part if isinstance(part, str) else part[0])
        for part in parts
    )


def context_line(use: ContextUse, width: int) -> Content:
    tiers = _tiers(use)
    for parts in tiers[:-1] if use.model else ():  # the bar matters more than the name: the last tier has none
        room = width - _length(parts) - len(SEPARATOR)
        if room >= min(MIN_MODEL_WIDTH, len(use.model)):
            return Content.assemble(*parts, SEPARATOR, (_shortened(use.model, room), "bold"))
    for parts in tiers:  # no room for the name
        if _length(parts) <= width:
            return Content.assemble(*parts)
    return Content.assemble(*tiers[-1]).truncate(width, ellipsis=True)


def _shortened(name: str, width: int) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"
