"""One reply being generated, off the UI thread.

The job runs the engine's generator in a worker thread, saves the reply to
the store as it grows (at least every SAVE_INTERVAL_S), finishes the row with
its status and numbers, and reports each step through `report` (the chat
screen's thread-safe post_message). It knows its message id, so switching
conversations mid-reply can neither lose it nor mix it into another one.

A save that fails (disk full) never stops the reply: the job reports
ReplySaveFailed once and streams on; when the final save fails too it is
marked `unsaved` and the chat screen calls save() until it returns True.
Any exception from the engine (a template, a prompt that does not fit, a
crashed worker) ends the reply as `error`, said in one line; cancel() stops a
reply also before the engine has started it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from textual.message import Message as TextualMessage

from chatapp.history import HistoryError, HistoryFull, HistoryStore, Status
from model.errors import one_line
from model.inference.backend import THINKING, Backend, Event, Finished, TextPiece
from model.inference.sampling import SamplingParams
from model.text.chat_format import Message

SAVE_INTERVAL_S = 0.5
HEARTBEAT_S = 10.0  # tells other instances the reply's writer is alive, also before the first token
DISK_FULL_REASON = "the disk is full: the reply is kept on screen and saved when space returns"
STATUS_FOR_REASON = {"stop": Status.COMPLETE, "length": Status.LENGTH, "cancelled": Status.STOPPED}

Report = Callable[[TextualMessage], object]  # the chat screen's post_message, callable from any thread


class ReplyPiece(TextualMessage):
    """A piece of a reply; `end` is the reply's length with it, so a view never shows a piece twice."""

    def __init__(self, message_id: int, text: str, end: int):
        super().__init__()
        self.message_id, self.text, self.end = message_id, text, end


class ReplyThinking(TextualMessage):
    """A piece of a reply's thinking; `end` is the thinking's length with it."""

    def __init__(self, message_id: int, text: str, end: int):
        super().__init__()
        self.message_id, self.text, self.end = message_id, text, end


class ReplySaveFailed(TextualMessage):
    """Saving the reply failed (once per job); the reply goes on, on screen."""

    def __init__(self, message_id: int, reason: str):
        super().__init__()
        self.message_id, self.reason = message_id, reason


class ReplyDone(TextualMessage):
    def __init__(self, job: ReplyJob):
        super().__init__()
        self.job = job


def engine_error_text(error: BaseException) -> str:
    """An engine's exception in one line, for the reply's footer and a notice."""
    return f"{type(error).__name__}: {one_line(error, 300)}"


@dataclass
class ReplyJob:
    backend: Backend
    store: HistoryStore
    conversation_id: int
    message_id: int
    messages: list[Message]
    params: SamplingParams
    reserve: int | None = None
    continue_last: bool = False
    text: str = ""  # the reply so far (with the earlier part when continuing): its answer
    thinking: str = ""  # a reasoning model's thinking so far, kept apart from the answer
    status: str = Status.STREAMING
    stats: dict | None = None
    error: str | None = None
    inspection: list = field(default_factory=list)
    unsaved: bool = False  # the final save failed: save() retries it
    cancelled: threading.Event = field(default_factory=threading.Event)
    _last_save: float = 0.0
    _save_failure_reported: bool = False
    _report: Report | None = None

    def cancel(self) -> None:
        """Stop the reply, from any thread: also one not started yet, whose engine would clear a cancel."""
        self.cancelled.set()
        self.backend.cancel()

    def start_events(self) -> Iterator[Event]:
        inspect = self.inspection.append if self.backend.supports_inspection else None
        return self.backend.chat(
            self.messages, self.params, self.reserve, inspect=inspect, continue_last=self.continue_last
        )

    def run(self, report: Report) -> None:
        """In the worker thread: generate, save, report; never raises, and always reports ReplyDone."""
        self._report = report
        done = threading.Event()
        threading.Thread(target=self._heartbeat_until, args=(done,), daemon=True, name="reply-heartbeat").start()
        try:
            self._generate(report)
        finally:
            done.set()
            if not self.save():
                self.unsaved = True
            report(ReplyDone(self))

    def _generate(self, report: Report) -> None:
        if self.cancelled.is_set():  # stopped before it started: the engine is not asked
            self.status = Status.STOPPED
            return
        try:
            events = self.start_events()
            for event in self._cancel_again_if_stopped(events):
                if isinstance(event, TextPiece) and event.text and event.kind == THINKING:
                    self.thinking += event.text
                    self._save_now_and_then()
                    report(ReplyThinking(self.message_id, event.text, len(self.thinking)))
                elif isinstance(event, TextPiece) and event.text:
                    self.text += event.text
                    self._save_now_and_then()
                    report(ReplyPiece(self.message_id, event.text, len(self.text)))
                elif isinstance(event, Finished):
                    self.status = STATUS_FOR_REASON.get(event.reason, Status.COMPLETE)
                    self.stats = {
                        "reason": event.reason,
                        "prompt_tokens": event.prompt_tokens,
                        "completion_tokens": event.completion_tokens,
                        "time_to_first_token_s": event.time_to_first_token_s,
                        "tokens_per_second": event.tokens_per_second,
                        "notices": list(event.notices),
                    }
                    if event.thinking_tokens:
                        self.stats["thinking_tokens"] = event.thinking_tokens
                        self.stats["thinking_s"] = event.thinking_s
            if self.status == Status.STREAMING:
                self.status, self.error = Status.ERROR, "the engine ended without finishing the reply"
        except Exception as error:  # noqa: BLE001 - any engine error (a template, a crash) fails this reply only
            self.status, self.error = Status.ERROR, engine_error_text(error)

    def _cancel_again_if_stopped(self, events: Iterator[Event]) -> Iterator[Event]:
        """An engine clears its cancel flag when it starts (in chat(), or at its first step): a stop sent
        before that is sent again, once."""
        resent = self.cancelled.is_set()
        if resent:
            self.backend.cancel()
        for index, event in enumerate(events):
            if index == 0 and not resent and self.cancelled.is_set():
                self.backend.cancel()
            yield event

    def save(self) -> bool:
        """Save the finished reply (again, after a failure); True once it is saved."""
        try:
            self.store.finish_message(
                self.message_id, self.text, self.status, self.stats, self.error, self.inspection, self.thinking
            )
        except HistoryError as error:
            self._report_save_failure(error)
            return False
        self.unsaved = False
        return True

    def _save_now_and_then(self) -> None:
        now = time.monotonic()
        if now - self._last_save >= SAVE_INTERVAL_S:
            self._last_save = now
            try:
                self.store.update_content(self.message_id, self.text, self.thinking)
            except HistoryError as error:
                self._report_save_failure(error)

    def _report_save_failure(self, error: HistoryError) -> None:
        if not self._save_failure_reported and self._report is not None:
            self._save_failure_reported = True
            reason = DISK_FULL_REASON if isinstance(error, HistoryFull) else error.reason
            self._report(ReplySaveFailed(self.message_id, reason))

    def _heartbeat_until(self, done: threading.Event) -> None:
        while not done.wait(HEARTBEAT_S):
            try:
                self.store.heartbeat(self.message_id)
            except HistoryError:
                pass  # the next save reports it
