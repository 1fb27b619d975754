"""A scripted engine behind the backend protocol, for the TUI tests.

Each call to chat() streams the next scripted reply, piece by piece: a string is a
piece of the answer, a ("thinking", text) pair a piece of the thinking. A test
can make it fail after some pieces, hold it mid-stream until released (a slow
stream without sleeps that race), and read what it was asked.
"""

from __future__ import annotations

import threading

from model.inference.backend import ANSWER, THINKING, CancelFlag, Finished, TextPiece
from model.inference.sampling import SamplingParams
from model.text.chat_format import FittedPrompt, Message, fit_to_context
from model.text.tokenizer import SPECIAL_TOKENS

DEFAULT_REPLY = ["Hello", " there", ", friend", "."]


class FakeTokenizer:
    """One token per character: easy to count in tests, and fit_to_context works on it."""

    special_ids = {text: 1000 + i for i, text in enumerate(SPECIAL_TOKENS)}
    end_of_text_id = special_ids[SPECIAL_TOKENS[0]]
    end_of_turn_id = special_ids[SPECIAL_TOKENS[-1]]

    def encode(self, text: str) -> list[int]:
        return [ord(c) % 1000 for c in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(chr(i) for i in ids)


class FakeBackendError(RuntimeError):
    pass


class FakeBackend:
    name = "fake"
    supports_inspection = True
    supports_continue = True

    def __init__(
        self,
        replies: list[list[str | tuple[str, str]]] | None = None,
        context_length: int = 512,
        fail_after: int | None = None,
        hold_after: int | None = None,
        model_name: str = "fake-model",
    ):
        self.replies: list[list[str | tuple[str, str]]] = [list(r) for r in (replies or [])]
        self.context_length = context_length
        self.trained_context_length = context_length
        self.model_name = model_name
        self.fail_after = fail_after  # raise after this many pieces
        self.hold_after = hold_after  # wait for release() after this many pieces
        self.tokenizer = FakeTokenizer()
        self.cancel_flag = CancelFlag()
        self.released = threading.Event()
        self.holding = threading.Event()  # set while a stream is held
        self.calls: list[dict] = []
        self.cancelled = 0

    def release(self) -> None:
        self.released.set()

    def cancel(self) -> None:
        self.cancelled += 1
        self.cancel_flag.set()

    def default_reserve(self, params: SamplingParams) -> int:
        return min(params.max_tokens, self.context_length // 2)

    def fit(
        self,
        messages: list[Message],
        reserve: int,
        continue_last: bool = False,
        params: SamplingParams | None = None,
    ) -> FittedPrompt:
        self.fit_params = params  # what the last fit was told the reply will use
        return fit_to_context(messages, self.tokenizer, self.context_length, reserve, continue_last=continue_last)

    def prompt_ids(self, text: str) -> list[int]:
        return self.tokenizer.encode(text)

    def reset_cache(self) -> None:
        pass

    def close(self) -> None:
        pass

    def next_reply(self) -> list[str | tuple[str, str]]:
        return self.replies.pop(0) if self.replies else list(DEFAULT_REPLY)

    def chat(
        self,
        messages: list[Message],
        params: SamplingParams,
        reserve: int | None = None,
        inspect=None,
        continue_last: bool = False,
    ):
        params.validate()
        self.calls.append({"messages": list(messages), "params": params, "continue_last": continue_last})
        self.cancel_flag.clear()
        return self._stream(self.next_reply(), params, inspect, messages)

    def complete(self, text: str, params: SamplingParams):
        return self._stream(self.next_reply(), params, None, [Message("user", text)])

    def _wait_for_release(self) -> None:
        self.holding.set()
        while not self.released.wait(0.005):
            if self.cancel_flag.is_set():
                break
        self.holding.clear()
        self.released.clear()

    def _stream(self, pieces: list[str | tuple[str, str]], params: SamplingParams, inspect, messages):
        prompt_tokens = sum(len(self.tokenizer.encode(m.content)) + 2 for m in messages) + 1
        produced, reason, thinking = 0, "stop", 0
        for index, scripted in enumerate(pieces):
            kind, piece = scripted if isinstance(scripted, tuple) else (ANSWER, scripted)
            if self.fail_after is not None and index == self.fail_after:
                raise FakeBackendError("the fake engine broke down mid-reply")
            if self.hold_after is not None and index == self.hold_after:
                self._wait_for_release()
            if self.cancel_flag.is_set():
                reason = "cancelled"
                break
            if produced >= params.max_tokens:
                reason = "length"
                break
            if inspect is not None:
                step = self.inspection_step(piece)
                if kind == THINKING:  # as the engine core marks a thinking token's step
                    step["thinking"] = True
                inspect(step)
            produced += 1
            thinking += kind == THINKING
            yield TextPiece(piece, [index], kind)
        yield Finished(
            reason,
            prompt_tokens,
            produced,
            0.01,
            100.0 if produced else 0.0,
            prompt_tokens,
            [],
            thinking_tokens=thinking,
            thinking_s=0.01 * thinking,
        )

    @staticmethod
    def inspection_step(piece: str) -> dict:
        """What the torch engine reports per token: top candidates, raw and after the filters."""
        return {
            "text": piece,
            "candidates": [
                {"text": piece, "raw_prob": 0.6, "final_prob": 0.75, "drawn": True},
                {"text": " maybe", "raw_prob": 0.2, "final_prob": 0.25},
                {"text": " never", "raw_prob": 0.1, "final_prob": 0.0},
            ],
        }
