"""The torch engine: KV-cached streaming generation behind the backend protocol.

Prefill the prompt in one forward pass, then decode one token at a time into a
static cache. When a new prompt starts with tokens already in the cache (the
usual case in a chat), only the new tokens are prefilled.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Callable, Iterator

import torch

from model.backend import CancelFlag, Event
from model.chat_format import Message, fit_to_context
from model.device import inference_dtype, resolve_device
from model.inspection import inspection_step
from model.model_folder import load_model
from model.reply_stream import ReplyStream, common_prefix_length
from model.sample import sample_next
from model.sampling import SamplingParams
from model.threads import default_threads

REPETITION_WINDOW = 64  # tokens the repetition penalty looks back over


def cpu_threads(model) -> tuple[int, int] | None:
    """(decode, prompt) threads for this model on the CPU (model/threads.py);
    None when the user chose with OMP_NUM_THREADS."""
    if os.environ.get("OMP_NUM_THREADS"):
        return None
    return default_threads(sum(p.numel() * p.element_size() for p in model.parameters()))


class TorchEngine:
    name = "torch"
    supports_inspection = True
    supports_continue = True

    def __init__(self, model, tokenizer, config: dict, device: str = "cpu"):
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        self.device = device
        self.model_name = config.get("name", "model")
        self.context_length = model.config.context_length
        self.cancel_flag = CancelFlag()
        self.cached_ids: list[int] = []  # the tokens whose keys/values are in the cache
        self.prefilled_tokens = 0
        self.last_reply: dict[str, list[int]] = {}  # text -> the ids sampled for it
        self.threads = cpu_threads(model) if device == "cpu" else None  # (decode, prompt); None: leave torch's
        model.setup_cache(batch=1)

    @classmethod
    def load(cls, folder: str | Path, device: str = "auto") -> "TorchEngine":
        device = resolve_device(device)
        model, tokenizer, config = load_model(folder, device=device, dtype=inference_dtype(device))
        return cls(model, tokenizer, config, device)

    def reset_cache(self) -> None:
        self.cached_ids = []

    def _use_threads(self, for_prompt: bool) -> None:
        if self.threads is not None:
            torch.set_num_threads(self.threads[1] if for_prompt else self.threads[0])

    def cancel(self) -> None:
        self.cancel_flag.set()

    def default_reserve(self, params: SamplingParams) -> int:
        return min(params.max_tokens, self.context_length // 2)

    def chat(
        self,
        messages: list[Message],
        params: SamplingParams,
        reserve: int | None = None,
        inspect: Callable[[dict], None] | None = None,
        continue_last: bool = False,
    ) -> Iterator[Event]:
        """A reply to the conversation; `inspect` receives each token's candidates."""
        params.validate()
        reserve = reserve or self.default_reserve(params)
        fitted = fit_to_context(messages, self.tokenizer, self.context_length, reserve, self.last_reply, continue_last)
        stop_ids = {self.tokenizer.end_of_turn_id, self.tokenizer.end_of_text_id, *params.stop_token_ids}
        return self.generate_ids(fitted.ids, params, stop_ids, fitted.notices, inspect=inspect)

    def complete(self, text: str, params: SamplingParams) -> Iterator[Event]:
        """Continue plain text (no chat format), as the base model was trained."""
        params.validate()
        ids = [self.tokenizer.end_of_text_id] + self.tokenizer.encode(text)
        budget = self.context_length - self.default_reserve(params)
        notices = []
        if len(ids) > budget:
            notices.append(f"the text was too long: its first {len(ids) - budget} tokens were left out")
            ids = ids[len(ids) - budget:]
        stop_ids = {self.tokenizer.end_of_text_id, *params.stop_token_ids}
        return self.generate_ids(ids, params, stop_ids, notices)

    # --- the loop ---

    def _forward(self, ids: list[int], start_pos: int | None) -> torch.Tensor:
        x = torch.tensor([ids], dtype=torch.long, device=self.device)
        logits, _ = self.model(x, start_pos=start_pos)
        return logits[0, -1].float()

    def _prefill(self, prompt: list[int]) -> torch.Tensor:
        reuse = common_prefix_length(self.cached_ids, prompt)
        reuse = min(reuse, len(prompt) - 1)  # at least one token must run to give logits
        self.cached_ids = self.cached_ids[:reuse]
        logits = self._forward(prompt[reuse:], start_pos=reuse)
        self.cached_ids = list(prompt)
        self.prefilled_tokens = len(prompt) - reuse
        return logits

    def generate_ids(
        self,
        prompt: list[int],
        params: SamplingParams,
        stop_ids: set[int],
        notices: list[str] | None = None,
        use_cache: bool = True,
        inspect: Callable[[dict], None] | None = None,
    ) -> Iterator[Event]:
        if not prompt or len(prompt) >= self.context_length:
            raise ValueError(f"prompt of {len(prompt)} tokens does not fit the context of {self.context_length}")
        self.cancel_flag.clear()
        seed = params.seed if params.seed is not None else random.randrange(2**63)
        generator = torch.Generator(device=self.device).manual_seed(seed)
        reply = ReplyStream(self.tokenizer, len(prompt), params.stop, min(params.max_tokens, self.context_length - len(prompt)))

        def sample(logits: torch.Tensor) -> int:
            history = torch.tensor((prompt + reply.generated)[-REPETITION_WINDOW:], device=logits.device)
            token = sample_next(logits, params, history, generator)
            if inspect is not None:
                inspect(inspection_step(logits, params, history, token, self.tokenizer))
            return token

        def next_logits(token: int) -> torch.Tensor:
            if not use_cache:
                return self._forward(prompt + reply.generated, None)
            logits = self._forward([token], start_pos=len(prompt) + len(reply.generated) - 1)
            self.cached_ids.append(token)
            return logits

        with torch.inference_mode():
            if self.cancel_flag.is_set():
                reply.reason = "cancelled"
            else:
                self._use_threads(for_prompt=True)
                logits = self._prefill(prompt) if use_cache else self._forward(prompt, None)
                if not use_cache:
                    self.cached_ids = []
                    self.prefilled_tokens = len(prompt)
                self._use_threads(for_prompt=False)
                yield from reply.run(logits, sample, lambda token: token in stop_ids, next_logits, self.cancel_flag.is_set)
        if not reply.ended_on_stop_string:
            self.last_reply = {self.tokenizer.decode(reply.generated): reply.generated}
        yield from reply.finish(self.prefilled_tokens, notices or [])
