"""Drawing the next token from the logits, in PyTorch.

Order: repetition penalty, temperature (0 is greedy), top-k, top-p, min-p.
`filtered_logits` returns the logits with every cut token at -inf, so the
tests (and the sampling inspector) can see exactly which set was allowed.
"""

from __future__ import annotations

import torch

from model.sampling import SamplingParams


def apply_repetition_penalty(logits: torch.Tensor, previous_ids: torch.Tensor, penalty: float) -> torch.Tensor:
    if penalty == 1.0 or previous_ids.numel() == 0:
        return logits
    logits = logits.clone()
    seen = logits[previous_ids]
    logits[previous_ids] = torch.where(seen > 0, seen / penalty, seen * penalty)
    return logits


def filtered_logits(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Temperature-scaled logits with tokens outside top-k / top-p / min-p at -inf."""
    logits = logits.float() / max(params.temperature, 1e-8)
    if 0 < params.top_k < logits.numel():
        kth = torch.topk(logits, params.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        before = torch.cumsum(probs, dim=-1) - probs  # mass of the tokens ranked above
        cut_sorted = before >= params.top_p
        cut_sorted[0] = False  # always keep the most likely token
        logits = logits.masked_fill(torch.zeros_like(cut_sorted).scatter(0, order, cut_sorted), float("-inf"))
    if params.min_p > 0.0:
        probs = torch.softmax(logits, dim=-1)
        logits = logits.masked_fill(probs < params.min_p * probs.max(), float("-inf"))
    return logits


def sample_next(logits: torch.Tensor, params: SamplingParams, previous_ids: torch.Tensor, generator: torch.Generator | None) -> int:
    logits = apply_repetition_penalty(logits, previous_ids, params.repetition_penalty)
    if params.temperature == 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(filtered_logits(logits, params), dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))
