"""A real LlamaEngine on a GGUF file whose logits are scripted: each evaluation draws the next id of
`engine.script` (at temperature 0), so a test writes the reply a model would write, token by token,
and everything around it (template, stop tokens, thinking split) is the real engine's."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def scripted_engine(path: Path):
    from quant.llama_engine import LlamaEngine

    engine = LlamaEngine.load(path, n_threads=1, state_cache_mb=0)
    script: list[int] = []

    def evaluate(start: int, ids: list[int]) -> np.ndarray:
        logits = np.zeros(engine.n_vocab, dtype=np.float32)
        logits[script.pop(0)] = 100.0
        return logits

    engine.evaluate = evaluate  # type: ignore[method-assign]
    engine.script = script  # type: ignore[attr-defined]
    return engine


def ids_of(engine, *parts: str) -> list[int]:
    """The ids of the parts: a control token's id, else the text encoded."""
    vocab = engine.prompt_format.vocab
    out: list[int] = []
    for part in parts:
        out += [vocab.control_tokens[part]] if part in vocab.control_tokens else vocab.encode(part)
    return out
