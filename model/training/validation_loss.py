"""Validation loss in nats per token, nats per character and perplexity.

Every token of the stream but the first is predicted, in non-overlapping
windows of the model's context. Nats per character (total nats over the
characters of the text) does not depend on the tokenizer, so it compares
with character-level models such as nanoGPT's Shakespeare.
"""

from __future__ import annotations

import math

import numpy as np


def summarize(total_nats: float, n_tokens: int, n_chars: int) -> dict:
    return {
        "nats_per_token": total_nats / n_tokens,
        "nats_per_char": total_nats / n_chars,
        "perplexity": math.exp(total_nats / n_tokens),
        "tokens": n_tokens,
        "chars": n_chars,
    }


def windows(ids: np.ndarray, context_length: int):
    """(inputs, targets) windows covering every token after the first."""
    for start in range(0, len(ids) - 1, context_length):
        chunk = ids[start : start + context_length + 1]
        yield chunk[:-1], chunk[1:]


def evaluate_model(model, ids: np.ndarray, n_chars: int, device: str = "cpu", batch_size: int = 8) -> dict:
    import torch
    import torch.nn.functional as F

    model.eval()
    total, count = 0.0, 0
    all_windows = list(windows(ids, model.config.context_length))
    full = [w for w in all_windows if len(w[0]) == model.config.context_length]
    batches = [full[i : i + batch_size] for i in range(0, len(full), batch_size)]
    batches += [[w] for w in all_windows if len(w[0]) != model.config.context_length]
    with torch.inference_mode():
        for batch in batches:
            x = torch.from_numpy(np.stack([w[0] for w in batch])).to(device)
            y = torch.from_numpy(np.stack([w[1] for w in batch])).to(device)
            logits, _ = model(x)
            total += F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="sum").item()
            count += y.numel()
    return summarize(total, count, n_chars)
