"""Drawing the next token in numpy, with exactly the rules of model/sample.py.

Order: repetition penalty, temperature (0 is greedy), top-k, top-p, min-p; the
draw uses a numpy Generator seeded per request. Doing it here rather than in
llama.cpp's sampler chain (which applies temperature last) keeps the meaning
of every SamplingParams field the same on both backends.
"""

from __future__ import annotations

import numpy as np

from model.sampling import SamplingParams


def apply_repetition_penalty(logits: np.ndarray, previous_ids, penalty: float) -> np.ndarray:
    if penalty == 1.0 or len(previous_ids) == 0:
        return logits
    logits = logits.copy()
    ids = np.unique(np.asarray(previous_ids, dtype=np.int64))
    seen = logits[ids]
    logits[ids] = np.where(seen > 0, seen / penalty, seen * penalty)
    return logits


def filtered_logits(logits: np.ndarray, params: SamplingParams) -> np.ndarray:
    """Temperature-scaled logits with tokens outside top-k / top-p / min-p at -inf."""
    logits = logits.astype(np.float64) / max(params.temperature, 1e-8)
    if 0 < params.top_k < logits.size:
        kth = np.partition(logits, -params.top_k)[-params.top_k]
        logits = np.where(logits < kth, -np.inf, logits)
    if params.top_p < 1.0:
        order = np.argsort(-logits, kind="stable")
        sorted_logits = logits[order]
        probs = np.exp(sorted_logits - sorted_logits[0])
        probs /= probs.sum()
        before = np.cumsum(probs) - probs  # mass of the tokens ranked above
        cut_sorted = before >= params.top_p
        cut_sorted[0] = False  # always keep the most likely token
        cut = np.zeros_like(cut_sorted)
        cut[order] = cut_sorted
        logits = np.where(cut, -np.inf, logits)
    if params.min_p > 0.0:
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        logits = np.where(probs < params.min_p * probs.max(), -np.inf, logits)
    return logits


def sample_next(logits: np.ndarray, params: SamplingParams, previous_ids, rng: np.random.Generator) -> int:
    logits = apply_repetition_penalty(np.asarray(logits, dtype=np.float32), previous_ids, params.repetition_penalty)
    if params.temperature == 0:
        return int(np.argmax(logits))
    scaled = filtered_logits(logits, params)
    cdf = np.cumsum(np.exp(scaled - scaled.max()))
    # the first token whose cumulative mass passes a uniform draw (never one at -inf)
    return int(min(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"), cdf.size - 1))
