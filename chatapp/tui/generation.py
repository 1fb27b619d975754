"""One reply being generated, off the UI thread.

The job runs the engine's generator in a worker thread, saves the reply to
the store as it grows (at least every SAVE_INTERVAL_S), finishes the row with
its status and numbers, and reports each step through `report` (the chat
screen's thread-safe post_message). It knows its message id, so switching
conversations mid-reply can neither lose it nor mix it into another one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from textual.message import Message as TextualMessage

from chatapp.history import HistoryStore, Status
from model.inference.backend import Finished, TextPiece
from model.text.chat_format import Message
from model.inference.sampling import SamplingParams

SAVE_INTERVAL_S = 0.5
STATUS_FOR_REASON = {"stop": Status.COMPLETE, "length": Status.LENGTH, "cancelled": Status.STOPPED}


class ReplyPiece(TextualMessage):
    """A piece of a reply; `end` is the reply's length with it, so a view never shows a piece twice."""

    def __init__(self, message_id: int, text: str, end: int):
        super().__init__()
        self.message_id, self.text, self.end = message_id, text, end


class ReplyDone(TextualMessage):
    def __init__(self, job: "ReplyJob"):
        super().__init__()
        self.job = job


@dataclass
class ReplyJob:
    backend: object
    store: HistoryStore
    conversation_id: int
    message_id: int
    messages: list[Message]
    params: SamplingParams
    reserve: int | None = None
    continue_last: bool = False
    text: str = ""  # the reply so far (with the earlier part when continuing)
    status: str = Status.STREAMING
    stats: dict | None = None
    error: str | None = None
    inspection: list = field(default_factory=list)
    _last_save: float = 0.0

    def start_events(self):
        inspect = self.inspection.append if self.backend.supports_inspection else None
        return self.backend.chat(self.messages, self.params, self.reserve, inspect=inspect, continue_last=self.continue_last)

    def run(self, report) -> None:
        """In the worker thread: generate, save, report; never raises."""
        try:
            for event in self.start_events():
                if isinstance(event, TextPiece) and event.text:
                    self.text += event.text
                    self._save_now_and_then()
                    report(ReplyPiece(self.message_id, event.text, len(self.text)))
                elif isinstance(event, Finished):
                    self.status = STATUS_FOR_REASON.get(event.reason, Status.COMPLETE)
                    self.stats = {
                        "reason": event.reason, "prompt_tokens": event.prompt_tokens,
                        "completion_tokens": event.completion_tokens,
                        "time_to_first_token_s": event.time_to_first_token_s,
                        "tokens_per_second": event.tokens_per_second, "notices": list(event.notices),
                    }
            if self.status == Status.STREAMING:
                self.status, self.error = Status.ERROR, "the engine ended without finishing the reply"
        except Exception as error:  # an engine error must not take the app down
            self.status, self.error = Status.ERROR, f"{type(error).__name__}: {error}"
        self.store.finish_message(self.message_id, self.text, self.status, self.stats, self.error, self.inspection)
        report(ReplyDone(self))

    def _save_now_and_then(self) -> None:
        now = time.monotonic()
        if now - self._last_save >= SAVE_INTERVAL_S:
            self.store.update_content(self.message_id, self.text)
            self._last_save = now
