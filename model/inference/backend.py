"""The backend protocol that both engines implement and the TUI and CLI consume.

Messages and sampling parameters in; a stream of events out: TextPiece for
each piece of text as it is produced, then one Finished with the reason and
the numbers. `cancel()` may be called from another thread: at most one more
token is produced after it, and a cancel sent after chat() returned but before
the first token is honoured. `context_length` is honest: prompt plus reply
never go past it. Callers never tokenize: `fit` renders a conversation to ids
the way chat() will. Nothing here imports torch.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from model.inference.sampling import SamplingParams
from model.text.chat_format import FittedPrompt, Message

FINISH_REASONS = ("stop", "length", "cancelled")


THINKING, ANSWER = "thinking", "answer"  # a TextPiece's kind (model.text.reasoning splits a reply)


@dataclass
class TextPiece:
    text: str
    token_ids: list[int] = field(default_factory=list)
    kind: str = ANSWER  # "answer", or "thinking": a reasoning model's thinking, shown apart and never the answer


@dataclass
class Finished:
    reason: str  # one of FINISH_REASONS
    prompt_tokens: int
    completion_tokens: int
    time_to_first_token_s: float
    tokens_per_second: float
    prefilled_tokens: int = 0  # prompt tokens actually computed (the rest came from the cache)
    notices: list[str] = field(default_factory=list)
    thinking_tokens: int = 0  # of completion_tokens, those spent thinking (markers included)
    thinking_s: float = 0.0  # from the first token to the thinking's end


Event = TextPiece | Finished


@dataclass
class CollectedReply:
    """A reply's events gathered: its answer's pieces, its thinking's, their token ids, and how it finished."""

    pieces: list[str] = field(default_factory=list)
    thinking_pieces: list[str] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)
    finished: Finished | None = None

    @property
    def text(self) -> str:
        """The answer (without the thinking)."""
        return "".join(self.pieces)

    @property
    def thinking(self) -> str:
        return "".join(self.thinking_pieces)

    def add(self, event: Event) -> None:
        if isinstance(event, TextPiece):
            (self.thinking_pieces if event.kind == THINKING else self.pieces).append(event.text)
            self.token_ids += event.token_ids
        else:
            self.finished = event


def collect_reply(
    events: Iterable[Event],
    on_text: Callable[[str], None] | None = None,
    on_thinking: Callable[[str], None] | None = None,
) -> CollectedReply:
    """Read a reply to its end; `on_text` sees each piece of the answer as it comes (to print it, say),
    `on_thinking` each piece of the thinking."""
    reply = CollectedReply()
    for event in events:
        reply.add(event)
        if isinstance(event, TextPiece) and event.text:
            callback = on_thinking if event.kind == THINKING else on_text
            if callback is not None:
                callback(event.text)
    return reply


def thinking_switch(backend) -> tuple[str | None, str]:
    """The chat template variable that turns a backend's thinking on or off (enable_thinking,
    reasoning_effort, thinking), or None and why not, for a setting to grey out."""
    fmt = getattr(backend, "reasoning_format", None)
    if fmt is None and getattr(backend, "info", None) is not None:  # a llama.cpp worker: its file's template
        template = getattr(backend.info, "chat_template", None)
        if template:
            from model.text.chat_template import template_variables
            from model.text.reasoning import detect_format

            try:
                fmt = detect_format(template, None, template_variables(template))
            except Exception:  # noqa: BLE001 - a template that does not parse has no switch to offer
                fmt = None
    if fmt is not None and fmt.switch is not None:
        return fmt.switch, ""
    if backend is None:
        return None, "no model is loaded"
    if getattr(backend, "url", None) is not None:
        return None, "a server's model: set it on the server"
    if fmt is not None:
        return None, "this model always thinks: its chat template has no switch"
    return None, "this model does not think apart (its chat template has no thinking)"


class EngineBusy(RuntimeError):
    """The engine is generating a reply and cannot answer this now (e.g. fit() for the context bar)."""


class EngineCrashed(RuntimeError):
    """The engine's worker process died (a native abort); the message is one line. The next request starts a new one."""


class Backend(Protocol):
    name: str  # "torch", "llama.cpp", ...
    model_name: str
    context_length: int  # the context in use: prompt + reply never pass it
    trained_context_length: int  # the model's own (a foreign GGUF may be run with less)
    supports_inspection: bool  # chat(inspect=...) reports each token's candidates
    supports_continue: bool  # chat(continue_last=True) goes on with an unfinished reply

    def chat(
        self,
        messages: list[Message],
        params: SamplingParams,
        reserve: int | None = None,
        inspect: Callable[[dict], None] | None = None,
        continue_last: bool = False,
    ) -> Iterator[Event]: ...

    def complete(self, text: str, params: SamplingParams) -> Iterator[Event]: ...

    def generate_ids(
        self,
        prompt: list[int],
        params: SamplingParams,
        stop_ids: set[int],
        notices: list[str] | None = None,
        use_cache: bool = True,
    ) -> Iterator[Event]: ...

    def fit(
        self,
        messages: list[Message],
        reserve: int,
        continue_last: bool = False,
        params: SamplingParams | None = None,
    ) -> FittedPrompt: ...

    def prompt_ids(self, text: str) -> list[int]: ...

    def default_reserve(self, params: SamplingParams) -> int: ...

    def cancel(self) -> None: ...

    def reset_cache(self) -> None: ...

    def close(self) -> None: ...


class CancelSignal(Protocol):
    """What the engine core checks before each token: a CancelFlag, or the llama.cpp
    worker's flag in shared memory (quant/llama_worker.py)."""

    def set(self) -> None: ...

    def clear(self) -> None: ...

    def is_set(self) -> bool: ...


class CancelFlag:
    """Set from any thread; checked by the engine before each token."""

    def __init__(self):
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def clear(self) -> None:
        self._event.clear()

    def is_set(self) -> bool:
        return self._event.is_set()
