"""The backend protocol that both engines implement and the TUI and CLI consume.

Messages and sampling parameters in; a stream of events out: TextPiece for
each piece of text as it is produced, then one Finished with the reason and
the numbers. `cancel()` may be called from another thread: at most one more
token is produced after it. `context_length` is honest: prompt plus reply
never go past it. Nothing here imports torch.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Iterator, Protocol, Union

from model.chat_format import Message
from model.sampling import SamplingParams

FINISH_REASONS = ("stop", "length", "cancelled")


@dataclass
class TextPiece:
    text: str
    token_ids: list[int] = field(default_factory=list)


@dataclass
class Finished:
    reason: str  # one of FINISH_REASONS
    prompt_tokens: int
    completion_tokens: int
    time_to_first_token_s: float
    tokens_per_second: float
    prefilled_tokens: int = 0  # prompt tokens actually computed (the rest came from the cache)
    notices: list[str] = field(default_factory=list)


Event = Union[TextPiece, Finished]


class Backend(Protocol):
    name: str
    model_name: str
    context_length: int

    def chat(self, messages: list[Message], params: SamplingParams, reserve: int | None = None) -> Iterator[Event]: ...

    def complete(self, text: str, params: SamplingParams) -> Iterator[Event]: ...

    def cancel(self) -> None: ...


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
