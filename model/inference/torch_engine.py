"""The torch engine: the engine core (model/inference/engine_core.py) running our GPT.

Prefill the prompt in one forward pass, then decode one token at a time into a
static KV cache; the core reuses the cached prefix of the previous prompt, so
in a chat only the new turn is prefilled. This file only says how ids become
logits.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from model.text.chat_format import ChatappFormat
from model.network.device import inference_dtype, resolve_device
from model.inference.engine_core import EngineCore
from model.network.model_folder import load_model
from model.inference.threads import default_threads


def cpu_threads(model) -> tuple[int, int] | None:
    """(decode, prompt) threads for this model on the CPU (model/inference/threads.py);
    None when the user chose with OMP_NUM_THREADS."""
    if os.environ.get("OMP_NUM_THREADS"):
        return None
    return default_threads(sum(p.numel() * p.element_size() for p in model.parameters()))


class TorchEngine(EngineCore):
    name = "torch"

    def __init__(self, model, tokenizer, config: dict, device: str = "cpu"):
        super().__init__(ChatappFormat(tokenizer), model.config.context_length, config.get("name", "model"))
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        self.device = device
        self.threads = cpu_threads(model) if device == "cpu" else None  # (decode, prompt); None: leave torch's
        model.setup_cache(batch=1)
        self._use_threads(for_prompt=False)

    @classmethod
    def load(cls, folder: str | Path, device: str = "auto") -> "TorchEngine":
        device = resolve_device(device)
        model, tokenizer, config = load_model(folder, device=device, dtype=inference_dtype(device))
        return cls(model, tokenizer, config, device)

    def _use_threads(self, for_prompt: bool) -> None:
        if self.threads is not None:
            torch.set_num_threads(self.threads[1] if for_prompt else self.threads[0])

    def _logits(self, ids: list[int], start_pos: int | None) -> np.ndarray:
        x = torch.tensor([ids], dtype=torch.long, device=self.device)
        with torch.inference_mode():
            logits, _ = self.model(x, start_pos=start_pos)
        return logits[0, -1].float().cpu().numpy()

    def evaluate(self, start: int, ids: list[int]) -> np.ndarray:
        if len(ids) == 1:
            return self._logits(ids, start)
        self._use_threads(for_prompt=True)
        try:
            return self._logits(ids, start)
        finally:
            self._use_threads(for_prompt=False)

    def evaluate_uncached(self, ids: list[int]) -> np.ndarray:
        return self._logits(ids, None)
