"""The one engine core both engines (torch, llama.cpp) are built on. Torch-free.

What lives here, once: fitting a conversation to the context (through the
model's prompt format: ours or a foreign template), reusing the cached prefix
of the previous prompt, remembering the ids sampled for the last reply (so the
next turn's prompt starts with exactly what is cached), the sampling loop with
its stop ids, stop strings, token budget and cancel, continuing an unfinished
reply, and the sampling inspector's per-token candidates.

What an engine supplies: `evaluate(start, ids)`, the logits after running ids
at positions start.. (its cache keeps positions < start), as a numpy array.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from model.inference.backend import CancelFlag, CancelSignal, Event
from model.inference.reply_stream import ReplyStream, common_prefix_length
from model.inference.sampling import SamplingParams, inspection_step, sample_next
from model.text.chat_format import FittedPrompt, Message
from model.text.reasoning import ReasoningFormat, thinking_kwargs

REPETITION_WINDOW = 64  # tokens the repetition penalty looks back over


def reply_rng(params: SamplingParams) -> np.random.Generator:
    """A reply's own random generator: from its seed, else from a fresh one."""
    return np.random.default_rng(params.seed if params.seed is not None else random.randrange(2**63))


def repetition_history(prompt_tail: list[int], generated: list[int]) -> list[int]:
    """What the repetition penalty looks back over: the prompt's tail, then the reply so far."""
    return (prompt_tail + generated[-REPETITION_WINDOW:])[-REPETITION_WINDOW:]


class EngineCore:
    name = "engine"
    supports_inspection = True
    supports_continue = True

    def __init__(self, prompt_format, context_length: int, model_name: str, trained_context_length: int | None = None):
        self.prompt_format = prompt_format
        self.context_length = context_length
        self.trained_context_length = trained_context_length or context_length
        self.model_name = model_name
        self.cancel_flag: CancelSignal = CancelFlag()
        self.cached_ids: list[int] = []  # the tokens whose keys/values are in the engine's cache
        self.prefilled_tokens = 0
        self.known_replies: dict[str, list[int]] = {}  # the last reply's text -> the ids sampled for it
        self.base_template_kwargs = dict(getattr(prompt_format, "template_kwargs", {}))
        if self.reasoning_format is not None:  # the splitter must see the markers' text, control tokens too
            prompt_format.show_reasoning_markers = True

    @property
    def reasoning_format(self) -> ReasoningFormat | None:
        """How the model's replies write their thinking (model.text.reasoning), None for a model that
        does not think (or whose template says nothing of it): then every piece is answer."""
        return getattr(self.prompt_format, "reasoning_format", None)

    # --- what each engine supplies ---

    def evaluate(self, start: int, ids: list[int]) -> np.ndarray:
        """Logits (float32, vocabulary-sized) after ids at positions start..; the cache keeps < start."""
        raise NotImplementedError

    def evaluate_uncached(self, ids: list[int]) -> np.ndarray:
        """Logits after ids computed from scratch (for `chatapp bench`'s comparison)."""
        return self.evaluate(0, ids)

    def close(self) -> None:
        pass

    # --- the protocol ---

    def cancel(self) -> None:
        self.cancel_flag.set()

    def take_pending_notices(self) -> list[str]:
        """Notices an engine gathered between replies (the torch engine's failed compile), for the next reply."""
        return []

    def reset_cache(self) -> None:
        self.cached_ids = []

    def default_reserve(self, params: SamplingParams) -> int:
        return min(params.max_tokens, self.context_length // 2)

    def prompt_ids(self, text: str) -> list[int]:
        """The ids complete() starts from for this text (before fitting)."""
        return self.prompt_format.plain_prompt(text)

    def fit(
        self,
        messages: list[Message],
        reserve: int,
        continue_last: bool = False,
        params: SamplingParams | None = None,
    ) -> FittedPrompt:
        """The prompt ids for a conversation, leaving `reserve` tokens for the reply. `params`: the
        sampling parameters the reply will use, whose thinking switch and template_kwargs change the
        prompt (an empty think block or none); without them, the last reply's are kept."""
        if params is not None:
            self._use_template_kwargs(params)
        return self.prompt_format.fit(messages, self.context_length, reserve, self.known_replies, continue_last)

    def chat(
        self,
        messages: list[Message],
        params: SamplingParams,
        reserve: int | None = None,
        inspect: Callable[[dict], None] | None = None,
        continue_last: bool = False,
    ) -> Iterator[Event]:
        """A reply to the conversation (or more of its last, unfinished reply); `inspect`
        receives each token's candidates. Bad input raises here, before any generation."""
        params.validate()
        fitted = self.fit(messages, reserve or self.default_reserve(params), continue_last, params)
        earlier = self.known_replies.get(messages[-1].content, []) if continue_last else []
        return self.generate_ids(
            fitted.ids,
            params,
            self.prompt_format.stop_ids,
            fitted.notices,
            inspect=inspect,
            stop_strings=self.prompt_format.stop_strings,
            earlier_reply=earlier,
            reasoning=self.prompt_format.continuation_reasoning(messages) if continue_last else self.reasoning_format,
        )

    def _use_template_kwargs(self, params: SamplingParams) -> None:
        """The chat template's variables for this reply: the thinking switch (params.thinking, mapped
        to the template's own keyword) and params.template_kwargs; a fit() without params keeps them."""
        if not hasattr(self.prompt_format, "template_kwargs"):
            return  # our own format has no template
        switch = thinking_kwargs(self.reasoning_format, params.thinking)
        self.prompt_format.template_kwargs = {**self.base_template_kwargs, **switch, **params.template_kwargs}

    def complete(self, text: str, params: SamplingParams) -> Iterator[Event]:
        """Continue plain text (no chat format), as a base model was trained."""
        params.validate()
        ids = self.prompt_format.plain_prompt(text)
        budget = self.context_length - self.default_reserve(params)
        notices = []
        if len(ids) > budget:
            notices.append(f"the text was too long: its first {len(ids) - budget} tokens were left out")
            ids = ids[len(ids) - budget :]
        return self.generate_ids(ids, params, self.prompt_format.plain_stop_ids, notices)

    def generate_ids(
        self,
        prompt: list[int],
        params: SamplingParams,
        stop_ids: set[int],
        notices: list[str] | None = None,
        use_cache: bool = True,
        inspect: Callable[[dict], None] | None = None,
        stop_strings: Sequence[str] = (),
        earlier_reply: Sequence[int] = (),
        reasoning: ReasoningFormat | None = None,
    ) -> Iterator[Event]:
        """Generate after prompt ids. The cancel flag is cleared now, not at the first token,
        so a cancel() sent before the first token is honoured. With `reasoning`, the reply is
        split into thinking and answer pieces (chat() passes the prompt format's)."""
        if not prompt or len(prompt) >= self.context_length:
            raise ValueError(f"a prompt of {len(prompt)} tokens does not fit the context of {self.context_length}")
        params.validate()
        self.cancel_flag.clear()
        notices = list(notices or []) + self.take_pending_notices()
        if params.max_tokens > self.context_length:
            notices.append(
                f"max_tokens {params.max_tokens:,} is more than the context of {self.context_length:,} "
                f"tokens: the reply stops at the context's end"
            )
        return self._generate(
            list(prompt),
            params,
            set(stop_ids) | set(params.stop_token_ids),
            notices,
            use_cache,
            inspect,
            list(params.stop) + list(stop_strings),
            list(earlier_reply),
            reasoning,
        )

    # --- the loop ---

    def _prefill(self, prompt: list[int]) -> np.ndarray:
        reuse = min(common_prefix_length(self.cached_ids, prompt), len(prompt) - 1)  # one token must run to give logits
        self.cached_ids = self.cached_ids[:reuse]
        logits = self.evaluate(reuse, prompt[reuse:])
        self.cached_ids = list(prompt)
        self.prefilled_tokens = len(prompt) - reuse
        return logits

    def _token_text(self, token_id: int) -> str:
        return self.prompt_format.token_bytes(token_id).decode("utf-8", errors="replace")

    def _generate(
        self, prompt, params, stop_ids, notices, use_cache, inspect, stop_strings, earlier_reply, reasoning=None
    ) -> Iterator[Event]:
        rng = reply_rng(params)
        budget = min(params.max_tokens, self.context_length - len(prompt))
        reply = ReplyStream(self.prompt_format, len(prompt), stop_strings, budget, reasoning)
        self.prefilled_tokens = 0
        prompt_tail = prompt[-REPETITION_WINDOW:]  # the penalty's window, without copying the whole prompt per token

        # a step goes to `inspect` once its token is added to the reply, marked "thinking" where it was
        pending: list[tuple[int, dict]] = []  # (the token's index in the reply, its step)

        def flush_step() -> None:
            if inspect is not None and pending:
                index, step = pending.pop()
                if reply.was_thinking(index):
                    step["thinking"] = True
                inspect(step)

        def sample(logits: np.ndarray) -> int:
            history = repetition_history(prompt_tail, reply.generated)
            token = sample_next(logits, params, history, rng)
            if inspect is not None:
                flush_step()
                pending.append(
                    (
                        len(reply.generated),
                        inspection_step(
                            logits, params, history, token, self._token_text, self.prompt_format.control_token_name
                        ),
                    )
                )
            return token

        def next_logits(token: int) -> np.ndarray:
            if not use_cache:
                return self.evaluate_uncached(prompt + reply.generated)
            logits = self.evaluate(len(prompt) + len(reply.generated) - 1, [token])
            self.cached_ids.append(token)
            return logits

        if self.cancel_flag.is_set():
            reply.reason = "cancelled"
        else:
            if use_cache:
                logits = self._prefill(prompt)
            else:
                self.cached_ids = []
                logits = self.evaluate_uncached(prompt)
                self.prefilled_tokens = len(prompt)
            yield from reply.run(logits, sample, lambda token: token in stop_ids, next_logits, self.cancel_flag.is_set)
            flush_step()
        self._remember_reply(earlier_reply, reply)
        yield from reply.finish(self.prefilled_tokens, notices)

    def _remember_reply(self, earlier_reply: list[int], reply: ReplyStream) -> None:
        """At a reply's end: the ids sampled for its text, so that the next turn's prompt holds exactly
        these ids (and finds them in the cache). The next turn sends the answer alone (its thinking
        apart): the ids stand for the text only where it is all answer (a reply that thought is
        tokenized again)."""
        if reply.ended_on_stop_string:
            return
        ids = earlier_reply + reply.generated
        self.known_replies = {self._decode(ids): ids} if not reply.thinking_tokens else {}

    def _decode(self, ids: list[int]) -> str:
        return b"".join(self.prompt_format.token_bytes(i) for i in ids).decode("utf-8", errors="replace")
