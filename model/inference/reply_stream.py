"""The bookkeeping both engines (torch and llama.cpp) share around their
sampling loop: sampled tokens become text (UTF-8 safe, stop strings held
back), and the loop ends with one Finished carrying the reason and the timing.
Torch-free, so the llama.cpp path can use it.
"""

from __future__ import annotations

import codecs
import time
from collections.abc import Callable, Iterator
from typing import Any

from model.inference.backend import ANSWER, THINKING, Event, Finished, TextPiece
from model.text.reasoning import ReasoningFormat, ReasoningSplitter


class Utf8Stream:
    def __init__(self):
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, data: bytes) -> str:
        return self._decoder.decode(data)

    def flush(self) -> str:
        return self._decoder.decode(b"", final=True)


class StopMatcher:
    """Holds back text that could be the start of a stop string.

    push() returns the text that is safe to show; `stopped` turns true when a
    stop string appears, and the text before it is all that is returned.
    """

    def __init__(self, stops: list[str]):
        self.stops = [s for s in stops if s]
        self.pending = ""
        self.stopped = False

    def push(self, text: str) -> str:
        if not self.stops:
            return text
        self.pending += text
        hits = [(self.pending.find(s), s) for s in self.stops if s in self.pending]
        if hits:
            at = min(hits)[0]
            self.stopped = True
            safe, self.pending = self.pending[:at], ""
            return safe
        hold = 0
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(self.pending)), 0, -1):
                if self.pending.endswith(stop[:n]):
                    hold = max(hold, n)
                    break
        safe = self.pending[: len(self.pending) - hold]
        self.pending = self.pending[len(safe) :]
        return safe

    def flush(self) -> str:
        text, self.pending = self.pending, ""
        return text


def common_prefix_length(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class ReplyStream:
    """One reply being generated: the engine yields from `run()` (the sampling
    loop, with its own ways to sample and to compute logits), sets `reason` if it
    never starts, and yields from `finish()` at the end.

    With a reasoning format (model.text.reasoning), the text is split as it streams into thinking
    and answer: each TextPiece says its kind, the format's markers are not shown, and Finished
    counts the tokens spent thinking. The tokenizer must then write the markers' text (a
    TemplateFormat with show_reasoning_markers on); one that can `remember_written_reply` is told,
    at the end, the reply as the model wrote it (markers and whitespace included), so that the
    next prompt writes it back byte for byte."""

    def __init__(
        self,
        tokenizer,
        prompt_tokens: int,
        stop_strings: list[str],
        max_new_tokens: int,
        reasoning: ReasoningFormat | None = None,
    ):
        self.tokenizer = tokenizer
        self.splitter = ReasoningSplitter(reasoning) if reasoning is not None else None
        self.thinking_tokens = 0
        self.thinking_flags: list[bool] = []  # per generated token: counted as thinking
        self.thinking_ended_at: float | None = None
        self.written: list[str] = []  # the reply's text as the model wrote it (what the splitter is fed)
        self.split: dict[str, list[str]] = {THINKING: [], ANSWER: []}  # the splitter's thinking and answer
        self.prompt_tokens = prompt_tokens
        self.max_new_tokens = max_new_tokens
        self.text_stream = Utf8Stream()
        self.stop_matcher = StopMatcher(stop_strings)
        self.generated: list[int] = []
        self.unreported: list[int] = []  # ids whose text is still held back (a split character, a possible stop string)
        self.held_pieces: list[TextPiece] = []  # pieces push() split off after the one it returned
        self.reason = "length"
        self.started = time.perf_counter()
        self.first_token_at: float | None = None

    def run(
        self,
        logits: Any,
        sample: Callable[[Any], int],
        is_stop: Callable[[int], bool],
        next_logits: Callable[[int], Any],
        cancelled: Callable[[], bool],
    ) -> Iterator[TextPiece]:
        """Draw a token from the logits; end on a stop token, a stop string, the token
        budget or a cancel (checked before each new token); else compute the next logits."""
        while True:
            token = sample(logits)
            self.token_sampled()
            if is_stop(token):
                self.reason = "stop"
                return
            piece = self.push(token)
            if piece:
                yield piece
                yield from self.take_held()
            if self.should_end:
                return
            if cancelled():
                self.reason = "cancelled"
                return
            logits = next_logits(token)

    def token_sampled(self) -> None:
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()

    def push(self, token: int) -> TextPiece | None:
        """Add a token to the reply; the text now safe to show, if any."""
        self.generated.append(token)
        self.unreported.append(token)
        thinking_before = self.splitter is not None and self.splitter.thinking
        text = self.stop_matcher.push(self.text_stream.push(self.tokenizer.token_bytes(token)))
        if self.stop_matcher.stopped:
            self.reason = "stop"
        pieces = self._pieces(text) if text else []
        thinking = self.splitter is not None and (thinking_before or self.splitter.thinking)
        self.thinking_flags.append(thinking)
        if thinking:
            self.thinking_tokens += 1
            self.thinking_ended_at = time.perf_counter()
        return pieces[0] if pieces else None

    def was_thinking(self, index: int) -> bool:
        """Whether the reply's index-th token was thinking (its markers included, as thinking_tokens
        counts them); a token drawn but not added (the stop token) is thinking if the reply was."""
        if index < len(self.thinking_flags):
            return self.thinking_flags[index]
        return self.splitter is not None and self.splitter.thinking

    def _pieces(self, text: str, final: bool = False) -> list[TextPiece]:
        """The text as pieces of one kind each; the first carries every id not reported yet, so the
        pieces' ids add up to the reply's (ids whose text was all markers wait for the next piece)."""
        if self.splitter is None:
            parts = [(ANSWER, text)] if text else []
        else:
            self.written.append(text)
            parts = self.splitter.feed(text) + (self.splitter.finish() if final else [])
            for kind, part in parts:
                self.split[kind].append(part)
        if not parts and final and self.unreported:
            parts = [(THINKING if self.splitter is not None and self.splitter.thinking else ANSWER, "")]
        pieces = [TextPiece(part, [], kind) for kind, part in parts]
        if pieces:
            pieces[0].token_ids, self.unreported = self.unreported, []
        if len(pieces) > 1:
            self.held_pieces.extend(pieces[1:])
        return pieces[:1]

    def take_held(self) -> list[TextPiece]:
        """The pieces after the one push() returned (one token's text may hold the thinking's end
        and the answer's start)."""
        held, self.held_pieces = self.held_pieces, []
        return held

    @property
    def should_end(self) -> bool:
        """A stop string appeared or the token budget is spent."""
        return self.stop_matcher.stopped or len(self.generated) >= self.max_new_tokens

    @property
    def ended_on_stop_string(self) -> bool:
        return self.stop_matcher.stopped

    def _tell_the_written_reply(self) -> None:
        remember = getattr(self.tokenizer, "remember_written_reply", None)
        thinking = "".join(self.split[THINKING])
        if remember is not None and thinking:
            remember(thinking, "".join(self.split[ANSWER]), "".join(self.written))

    def finish(self, prefilled_tokens: int, notices: list[str]) -> Iterator[Event]:
        """The held-back text, then the Finished event."""
        tail = self.stop_matcher.push(self.text_stream.flush())
        if not self.stop_matcher.stopped:
            tail += self.stop_matcher.flush()
        pieces = self._pieces(tail, final=True) + self.take_held()
        if self.unreported:  # ids whose text was all markers
            pieces.append(TextPiece("", self.unreported, pieces[-1].kind if pieces else ANSWER))
            self.unreported = []
        yield from pieces
        self._tell_the_written_reply()
        finished_at = time.perf_counter()
        first = self.first_token_at or finished_at
        decoded = len(self.generated) - 1  # the first token's time is the prefill's
        decode_rate = decoded / (finished_at - first) if decoded > 0 and finished_at > first else 0.0
        yield Finished(
            reason=self.reason,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=len(self.generated),
            time_to_first_token_s=first - self.started,
            tokens_per_second=decode_rate,
            prefilled_tokens=prefilled_tokens,
            notices=list(notices),
            thinking_tokens=self.thinking_tokens,
            thinking_s=(self.thinking_ended_at - first) if self.thinking_ended_at is not None else 0.0,
        )
