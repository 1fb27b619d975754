"""The torch engine: the engine core (model/inference/engine_core.py) running our GPT.

Prefill the prompt in one forward pass (the LM head on its last position only),
then decode one token at a time into a static KV cache with a step whose shapes
never change, eager or compiled (model/inference/compiled_step.py); the core
reuses the cached prefix of the previous prompt, so in a chat only the new turn
is prefilled, and the caches of recent conversations are kept
(model/inference/prompt_cache.py), so coming back to one prefills only its new
tokens. This file only says how ids become logits, and how a cache is copied.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from model.inference.compiled_step import CompiledStep, compile_by_default, use_compile_cache
from model.inference.engine_core import EngineCore
from model.inference.prompt_cache import DEFAULT_PROMPT_CACHE_MB, PromptCache
from model.inference.reply_stream import common_prefix_length
from model.inference.threads import default_threads
from model.network.device import inference_dtype, resolve_device
from model.network.model_folder import load_model
from model.text.chat_format import ChatappFormat

RECENT_REPLIES = 16  # replies whose sampled ids are kept, for the conversations in the prompt cache


def cpu_threads(model, threads: int | None = None, threads_batch: int | None = None) -> tuple[int, int] | None:
    """(decode, prompt) threads for this model on the CPU: the ones asked for (--threads,
    --threads-batch: the prompt's follow the decode's when only those are given, as in llama.cpp),
    else model/inference/threads.py's; None when the user chose with OMP_NUM_THREADS alone."""
    if threads is not None or threads_batch is not None:
        decode, prompt = default_threads(sum(p.numel() * p.element_size() for p in model.parameters()))
        decode = threads or decode
        return decode, threads_batch or threads or prompt
    if os.environ.get("OMP_NUM_THREADS"):
        return None
    return default_threads(sum(p.numel() * p.element_size() for p in model.parameters()))


class TorchEngine(EngineCore):
    name = "torch"

    def __init__(
        self,
        model,
        tokenizer,
        config: dict,
        device: str = "cpu",
        compile: bool = False,
        threads: int | None = None,
        threads_batch: int | None = None,
    ):
        """compile: compile the decode step in the background and switch to it when ready; threads,
        threads_batch: CPU threads for decoding and for prompts (torch.set_num_threads)."""
        super().__init__(ChatappFormat(tokenizer), model.config.context_length, config.get("name", "model"))
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        self.device = device
        # (decode, prompt); None: leave torch's
        self.threads = cpu_threads(model, threads, threads_batch) if device == "cpu" else None
        self.cache = model.new_cache(batch=1)
        self.decode_step = model.decode_step  # eager until a compiled step is adopted
        self.compiling = CompiledStep(model, device) if compile else None
        self.compile_status = "compiling" if compile else "off"  # then "on" or "failed: ..."
        self.compile_seconds: float | None = None
        self.pending_notices: list[str] = []
        self._use_threads(for_prompt=False)
        # recent prompts' caches: (keys, values) per layer, their filled positions only
        self.prompt_cache: PromptCache[tuple[list[torch.Tensor], list[torch.Tensor]]] = PromptCache(
            DEFAULT_PROMPT_CACHE_MB * 2**20
        )
        self.recent_replies: dict[str, list[int]] = {}  # the last few replies' texts -> their sampled ids

    @classmethod
    def load(
        cls,
        folder: str | Path,
        device: str = "auto",
        compile: str = "off",
        compile_cache: str | Path | None = None,
        threads: int | None = None,
        threads_batch: int | None = None,
    ) -> TorchEngine:
        """compile: on, off, or auto (compile_by_default); compile_cache: where compiled kernels persist;
        threads, threads_batch: CPU threads (None: by the model's size, or OMP_NUM_THREADS)."""
        device = resolve_device(device)
        wanted = compile == "on" or (compile == "auto" and compile_by_default(device))
        if wanted:
            use_compile_cache(compile_cache)  # before torch reads where its cache is
        model, tokenizer, config = load_model(folder, device=device, dtype=inference_dtype(device))
        return cls(model, tokenizer, config, device, wanted, threads=threads, threads_batch=threads_batch)

    @property
    def compile_state(self) -> str:
        """What the app shows: "compiling", "on" (also when the compiled step is ready and taken up at
        the next token), "off", or "failed: ..."; read from any thread."""
        return self.compiling.state if self.compiling is not None else self.compile_status

    def wait_for_compile(self, timeout: float | None = None) -> str:
        """Block until a compile under way is done (for benchmarks); returns compile_status."""
        if self.compiling is not None:
            self.compiling.wait(timeout)
            self._adopt_compiled_step()
        return self.compile_status

    def _adopt_compiled_step(self) -> None:
        compiling = self.compiling
        if compiling is None or not compiling.ready.is_set():
            return
        self.compiling, self.compile_status = None, compiling.state
        if compiling.step is None:
            self.pending_notices.append(f"torch.compile failed, decoding without it ({compiling.error})")
            return
        self.decode_step, self.cache = compiling.adopt(self.cache)
        self.compile_seconds = compiling.seconds

    def take_pending_notices(self) -> list[str]:
        notices, self.pending_notices = self.pending_notices, []
        return notices

    def _use_threads(self, for_prompt: bool) -> None:
        if self.threads is not None:
            torch.set_num_threads(self.threads[1] if for_prompt else self.threads[0])

    def _ids(self, ids: list[int]) -> torch.Tensor:
        return torch.tensor([ids], dtype=torch.long, device=self.device)

    def evaluate(self, start: int, ids: list[int]) -> np.ndarray:
        if len(ids) == 1:
            self._adopt_compiled_step()
            if self.compiling is not None:
                self.compiling.decoding()
            position = torch.tensor([start], dtype=torch.long, device=self.device)
            with torch.inference_mode():
                logits = self.decode_step(self._ids(ids), position, self.cache.keys, self.cache.values)
            return logits[0].float().cpu().numpy()
        self._use_threads(for_prompt=True)
        try:
            with torch.inference_mode():
                return self.model.prefill(self._ids(ids), self.cache, start)[0].float().cpu().numpy()
        finally:
            self._use_threads(for_prompt=False)

    def evaluate_uncached(self, ids: list[int]) -> np.ndarray:
        with torch.inference_mode():
            logits, _ = self.model(self._ids(ids))
        return logits[0, -1].float().cpu().numpy()

    # --- recent conversations' caches (model/inference/prompt_cache.py) ---

    def reset_cache(self) -> None:
        super().reset_cache()
        self.prompt_cache.clear()  # cold: nothing kept is reused
        self.recent_replies = {}

    def _prefill(self, prompt: list[int]) -> np.ndarray:
        """The core's, after copying back the kept cache that shares the longest prefix with `prompt`,
        when it shares more than the cache holds now."""
        held = common_prefix_length(self.cached_ids, prompt)
        found = self.prompt_cache.best(prompt[:-1], better_than=held)  # one token must run to give logits
        if found is not None:
            length, (keys, values) = found
            with torch.inference_mode():
                for mine, kept in zip(self.cache.keys + self.cache.values, keys + values):
                    mine[:, :, :length].copy_(kept[:, :, :length])
            self.cached_ids = list(prompt[:length])
        return super()._prefill(prompt)

    def _generate(self, *args, **kwargs):
        yield from super()._generate(*args, **kwargs)
        # a conversation come back to sends its last reply as the ids it was sampled as, as its cache holds it
        recent = {text: ids for text, ids in self.recent_replies.items() if text not in self.known_replies}
        self.recent_replies = dict(list({**recent, **self.known_replies}.items())[-RECENT_REPLIES:])
        self.known_replies = dict(self.recent_replies)
        length = len(self.cached_ids)  # the prompt and the reply, as the cache holds them
        if length:
            with torch.inference_mode():
                keys = [k[:, :, :length].clone() for k in self.cache.keys]
                values = [v[:, :, :length].clone() for v in self.cache.values]
            size = sum(t.numel() * t.element_size() for t in keys + values)
            self.prompt_cache.put(self.cached_ids, (keys, values), size)
