"""A reasoning model's reply, split as it streams into its thinking and its answer. Torch-free.

Real models write their thinking in one of a few layouts (llama.cpp's
common/chat.cpp parses the same ones):

- "think": `<think>...</think>answer` (Qwen3, QwQ, DeepSeek-R1 and its distills,
  GLM-4.5/4.6/4.7, MiniMax-M2, Nemotron, Kimi-K2-Thinking, SmolLM3, ...). A template
  may open the block itself in its generation prompt (Qwen3-Thinking, the newer R1
  distills: the prompt ends in `<think>\\n`): the reply then starts inside thinking.
- "granite": Granite 3.3's `<think>...</think><response>answer</response>`.
- "seed": ByteDance Seed-OSS's `<seed:think>...</seed:think>`.
- "mistral": Magistral / Ministral's `[THINK]...[/THINK]answer`.
- "cohere": Command-R7B / Command-A's `<|START_THINKING|>...<|END_THINKING|>`
  then `<|START_RESPONSE|>answer<|END_RESPONSE|>`.
- "gemma4": Gemma 4's `<|channel>thought...<channel|>answer`.
- "kimi-k3": `<|open|>think<|sep|>...<|close|>think<|sep|>` then the response block.
- "apriel": Apriel's `Here are my reasoning steps: ... [BEGIN FINAL RESPONSE] answer [END FINAL RESPONSE]`.
- "gpt-oss": the harmony channels,
  `<|channel|>analysis<|message|>...<|end|><|start|>assistant<|channel|>final<|message|>answer`.

Many of these markers are control tokens, which llama.cpp's detokenizer writes as
nothing: the engine must write the text of a control token that is one of the
format's `marker_tokens` into the text it feeds the splitter (and only there).

`detect_format(template, generation_prompt)` says which layout a chat template
uses (None: not a reasoning template), whether the reply starts inside thinking
(the generation prompt opened the block), and which keyword switches thinking on
or off (`enable_thinking`, `reasoning_effort`, `thinking`), if any.

`ReasoningSplitter(fmt).feed(piece)` returns `[(kind, text), ...]`, kind "thinking"
or "answer", for each streamed piece as it arrives; a marker split across pieces
is held back until it is whole (or proves not to be one); `finish()` returns what
was held. The markers themselves are never returned, nor the whitespace between
the thinking and the answer. A marker is only honoured where the layout puts it
(an opening marker only before any answer text, a closing one only inside the
thinking), so an answer that talks about `<think>` tags keeps them.

`thinking_kwargs(fmt, on)` is the template variable for a chat's "thinking: on / off / model
default" setting ({} for the default, or where the template has no switch).
`split_reply(text, fmt)` is the whole reply at once: (thinking, answer).
`join_reply(thinking, answer, fmt)` writes an earlier reply back the way the model
wrote it, for a template that reads thinking inside the content: the thinking verbatim
between its markers, then `fmt.gap` (the newlines the family writes after its thinking,
read from its template: Qwen3's `</think>\n\n`, SmolLM3's `</think>\n`, Granite's none),
then the answer: `join_reply(*split_reply(text, fmt), fmt) == text` for a reply written so.
`continuing_thinking(fmt)` is the layout for continuing a reply stopped inside its thinking:
the continuation starts inside the block.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field, replace

THINKING = "thinking"
ANSWER = "answer"


@dataclass(frozen=True)
class ReasoningFormat:
    name: str
    open: str  # the marker that opens the thinking
    close: str  # the marker that closes it
    answer_open: tuple[str, ...] = ()  # markers the answer may start with (dropped)
    answer_close: str = ""  # a marker that ends the answer (dropped)
    between: tuple[str, ...] = ()  # markers dropped between the thinking and the answer
    starts_inside: bool = False  # the generation prompt opened the thinking: the reply starts inside it
    switch: str | None = None  # the template's keyword that turns thinking on / off, if any
    switch_values: tuple = ()  # (on, off) values of the switch
    gap: str = ""  # what the model writes between the thinking and the answer (dropped by the splitter)
    marker_tokens: tuple[str, ...] = field(default=())  # marker texts the engine must show the splitter

    @property
    def markers(self) -> tuple[str, ...]:
        return tuple(m for m in (self.open, self.close, *self.answer_open, self.answer_close, *self.between) if m)


_THINK = ReasoningFormat("think", "<think>", "</think>", gap="\n\n", marker_tokens=("<think>", "</think>"))
FORMATS: dict[str, ReasoningFormat] = {
    "think": _THINK,
    "granite": ReasoningFormat(
        "granite",
        "<think>",
        "</think>",
        answer_open=("<response>",),
        answer_close="</response>",
        marker_tokens=("<think>", "</think>", "<response>", "</response>"),
    ),
    "seed": ReasoningFormat("seed", "<seed:think>", "</seed:think>", marker_tokens=("<seed:think>", "</seed:think>")),
    "mistral": ReasoningFormat("mistral", "[THINK]", "[/THINK]", marker_tokens=("[THINK]", "[/THINK]")),
    "cohere": ReasoningFormat(
        "cohere",
        "<|START_THINKING|>",
        "<|END_THINKING|>",
        answer_open=("<|START_RESPONSE|>",),
        answer_close="<|END_RESPONSE|>",
        marker_tokens=("<|START_THINKING|>", "<|END_THINKING|>", "<|START_RESPONSE|>", "<|END_RESPONSE|>"),
    ),
    "gemma4": ReasoningFormat("gemma4", "<|channel>thought", "<channel|>", marker_tokens=("<|channel>", "<channel|>")),
    "kimi-k3": ReasoningFormat(
        "kimi-k3",
        "<|open|>think<|sep|>",
        "<|close|>think<|sep|>",
        answer_open=("<|open|>response<|sep|>",),
        answer_close="<|close|>response<|sep|>",
        marker_tokens=("<|open|>", "<|close|>", "<|sep|>"),
    ),
    "apriel": ReasoningFormat(
        "apriel", "Here are my reasoning steps:", "[BEGIN FINAL RESPONSE]", answer_close="[END FINAL RESPONSE]"
    ),
    "gpt-oss": ReasoningFormat(
        "gpt-oss",
        "<|channel|>analysis<|message|>",
        "<|end|>",
        answer_open=("<|channel|>final<|message|>",),
        answer_close="<|return|>",
        between=("<|start|>assistant",),
        marker_tokens=("<|channel|>", "<|message|>", "<|end|>", "<|start|>", "<|return|>"),
    ),
}

GRANITE_INSTRUCTION = "write your response between <response></response>"  # Granite 3.3's system prompt
SWITCHES = (  # keyword, (on, off): the first the template reads is its switch
    ("enable_thinking", (True, False)),
    ("reasoning_effort", ("medium", "low")),  # gpt-oss has no "off": low is the least thinking
    ("thinking", (True, False)),  # Granite 3.3, Kimi-K3
)


def detect_format(
    template: str | None, generation_prompt: str | None = None, variables: Collection[str] | None = None
) -> ReasoningFormat | None:
    """The reasoning layout a chat template uses, or None. `generation_prompt`, the text the
    template writes to start a reply, says whether the reply starts inside the thinking;
    `variables`, the names the template reads from outside (jinja2.meta), which switch it has
    (without them, a guess from the source's text)."""
    if not template:
        return None
    if "<|channel|>analysis" in template or "<|channel|>final" in template:
        fmt = FORMATS["gpt-oss"]
    elif "<|channel>thought" in template:
        fmt = FORMATS["gemma4"]
    elif "<|open|>think<|sep|>" in template or "<|open|>think<|sep|>" in (generation_prompt or ""):
        fmt = FORMATS["kimi-k3"]
    elif "[THINK]" in template:
        fmt = FORMATS["mistral"]
    elif "<|START_THINKING|>" in template:
        fmt = FORMATS["cohere"]
    elif "<seed:think>" in template:
        fmt = FORMATS["seed"]
    elif "[BEGIN FINAL RESPONSE]" in template:
        fmt = FORMATS["apriel"]
    elif "<think>" in template or "</think>" in template:
        fmt = FORMATS["granite"] if GRANITE_INSTRUCTION in template else _THINK
    else:
        return None
    reads = (
        (lambda name: name in variables) if variables is not None else (lambda name: _reads_variable(template, name))
    )
    switch = next(((name, values) for name, values in SWITCHES if reads(name)), None)
    inside = bool(generation_prompt) and _opens_thinking(generation_prompt or "", fmt)
    return replace(
        fmt,
        starts_inside=inside,
        switch=switch[0] if switch else None,
        switch_values=switch[1] if switch else (),
        gap=_gap_after_thinking(template, fmt),
    )


def continuing_thinking(fmt: ReasoningFormat) -> ReasoningFormat:
    """The layout for more of a reply that stopped inside its thinking: it starts inside the block."""
    return replace(fmt, starts_inside=True)


def _gap_after_thinking(template: str, fmt: ReasoningFormat) -> str:
    """The newlines the template writes after the thinking's close marker where it writes an earlier
    reply or an empty thinking block (Qwen3's `</think>\\n\\n`, SmolLM3's `</think>\\n`): the family's
    habit, the most common run; the format's own where the template writes none after it."""
    runs = [run.replace("\\n", "\n") for run in re.findall(re.escape(fmt.close) + r"((?:\n|\\n)+)", template)]
    return Counter(runs).most_common(1)[0][0] if runs else fmt.gap


def thinking_kwargs(fmt: ReasoningFormat | None, on: bool | None) -> dict:
    """The template variables for a chat's "thinking: on / off / model default" (None): nothing
    for the default (the template's own, as transformers renders it) or where the template has
    no switch (a setting to grey out: `fmt is None or fmt.switch is None`)."""
    if fmt is None or fmt.switch is None or on is None:
        return {}
    return {fmt.switch: fmt.switch_values[0 if on else 1]}


def _reads_variable(template: str, name: str) -> bool:
    """A guess: the name inside a Jinja tag or expression, not as a message field."""
    for block in re.findall(r"\{[{%](.*?)[}%]\}", template, re.S):
        block = re.sub(r"'[^']*'|\"[^\"]*\"", "", block)
        if re.search(rf"(?<![\w.]){re.escape(name)}(?!\w)", block):
            return True
    return False


def _opens_thinking(generation_prompt: str, fmt: ReasoningFormat) -> bool:
    """The prompt ends with the thinking opened and not closed."""
    tail = generation_prompt.rstrip()
    opened = tail.rfind(fmt.open.strip())
    return opened >= 0 and tail.endswith(fmt.open.strip()) and fmt.close not in tail[opened:]


# states of the splitter
_START, _THINKING, _AFTER, _ANSWER = "start", "thinking", "after", "answer"


class ReasoningSplitter:
    """Splits a streamed reply into thinking and answer, piece by piece (see the module's docstring)."""

    def __init__(self, fmt: ReasoningFormat | None):
        self.fmt = fmt
        self.state = _ANSWER if fmt is None else (_THINKING if fmt.starts_inside else _START)
        self._held = ""  # text that may be the start of a marker
        self._at_thinking_start = fmt is not None and fmt.starts_inside  # a repeated opening marker is dropped

    @property
    def thinking(self) -> bool:
        """Inside the thinking now (what a streaming view shows as "thinking...")."""
        return self.state == _THINKING

    def _candidates(self) -> tuple[tuple[str, str], ...]:
        """(marker, state it leads to) honoured in the current state."""
        fmt = self.fmt
        assert fmt is not None
        if self.state == _START:
            return tuple((m, _ANSWER) for m in fmt.answer_open) + ((fmt.open, _THINKING),)
        if self.state == _THINKING:
            opening = ((fmt.open, _THINKING),) if self._at_thinking_start else ()
            return opening + ((fmt.close, _AFTER),)
        if self.state == _AFTER:  # a second thinking block may follow before the answer (gpt-oss's analyses)
            return (
                tuple((m, _ANSWER) for m in fmt.answer_open)
                + tuple((m, _AFTER) for m in fmt.between)
                + ((fmt.open, _THINKING),)
            )
        return ((fmt.answer_close, _ANSWER),) if fmt.answer_close else ()

    def feed(self, text: str) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        if self.fmt is None:
            return [(ANSWER, text)] if text else []
        self._held += text
        while self._held:
            if not self._step(out):
                break
        return _merged(out)

    def _step(self, out: list[tuple[str, str]]) -> bool:
        """Consume what can be decided from the held text; False when it must wait for more."""
        held = self._held
        if self.state in (_START, _AFTER):
            stripped = held.lstrip()
            skipped = len(held) - len(stripped)
            if not stripped:
                if self.state == _AFTER:
                    self._held = ""  # whitespace between thinking and answer is dropped
                return False
            for marker, state in self._candidates():
                if stripped.startswith(marker):
                    self._enter(state)
                    self._held = stripped[len(marker) :]
                    return True
            if any(marker.startswith(stripped) for marker, _ in self._candidates()):
                return False  # may still become a marker
            # plain text: the answer starts here (whitespace before it kept only at the very start)
            self._held = held if self.state == _START else held[skipped:]
            self.state = _ANSWER
            return True
        candidates = self._candidates()
        if self.state == _THINKING and self._at_thinking_start:
            stripped = held.lstrip()
            if not stripped:
                return False
            if stripped.startswith(self.fmt.open):  # type: ignore[union-attr]
                self._held = stripped[len(self.fmt.open) :]  # type: ignore[union-attr]
                self._at_thinking_start = False
                return True
            if self.fmt.open.startswith(stripped):  # type: ignore[union-attr]
                return False
            self._at_thinking_start = False
            candidates = self._candidates()
        kind = THINKING if self.state == _THINKING else ANSWER
        found = min(
            ((held.find(marker), marker, state) for marker, state in candidates if marker and marker in held),
            default=None,
        )
        if found is not None:
            at, marker, state = found
            if at:
                out.append((kind, held[:at]))
            self._held = held[at + len(marker) :]
            if self.state == _ANSWER:  # the answer's end marker: what follows stays answer
                return True
            self._enter(state)
            return True
        keep = max((_partial_suffix(held, marker) for marker, _ in candidates if marker), default=0)
        if len(held) > keep:
            out.append((kind, held[: len(held) - keep]))
        self._held = held[len(held) - keep :]
        return False

    def _enter(self, state: str) -> None:
        self._at_thinking_start = state == _THINKING
        self.state = state

    def finish(self) -> list[tuple[str, str]]:
        """What was held back at the reply's end (a marker's start that never completed is text)."""
        held, self._held = self._held, ""
        if not held or self.fmt is None:
            return [(ANSWER, held)] if held else []
        if self.state == _THINKING:
            return [(THINKING, held)]
        if self.state == _AFTER:
            return [(ANSWER, held.lstrip())] if held.strip() else []
        if self.state == _START and not held.strip():
            return []
        return [(ANSWER, held)]


def _partial_suffix(text: str, marker: str) -> int:
    """The length of the longest end of text that is a proper start of marker."""
    for size in range(min(len(marker) - 1, len(text)), 0, -1):
        if marker.startswith(text[-size:]):
            return size
    return 0


def _merged(pieces: list[tuple[str, str]]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for kind, text in pieces:
        if not text:
            continue
        if out and out[-1][0] == kind:
            out[-1] = (kind, out[-1][1] + text)
        else:
            out.append((kind, text))
    return out


def split_reply(text: str, fmt: ReasoningFormat | None) -> tuple[str, str]:
    """A whole reply: (thinking, answer)."""
    splitter = ReasoningSplitter(fmt)
    parts = splitter.feed(text) + splitter.finish()
    thinking = "".join(t for kind, t in parts if kind == THINKING)
    answer = "".join(t for kind, t in parts if kind == ANSWER)
    return thinking, answer


def join_reply(thinking: str, answer: str, fmt: ReasoningFormat | None) -> str:
    """An earlier reply as the model wrote it, thinking included (for templates that read the
    thinking inside the content, e.g. `content.split('</think>')`): the thinking verbatim (its own
    newlines are the model's), the family's gap, the answer in its markers."""
    if not thinking:
        return answer
    fmt = fmt or _THINK
    between = fmt.between[0] if fmt.between else ""
    response = f"{fmt.answer_open[0]}{answer}{fmt.answer_close}" if fmt.answer_open else answer
    if fmt.name == "gpt-oss":  # the final channel ends the reply: its <|return|> is never written back
        response = f"{fmt.answer_open[0]}{answer}"
    return f"{fmt.open}{thinking}{fmt.close}{fmt.gap}{between}{response}"


def open_thinking(thinking: str, fmt: ReasoningFormat) -> str:
    """A reply stopped inside its thinking, as the model wrote it after the generation prompt: the
    opening marker (unless the prompt opened the block) and the thinking, the block left open."""
    return thinking if fmt.starts_inside else fmt.open + thinking
