"""What the sampling inspector shows for one generated token: its top
candidates with their probability under the raw logits and after the
penalty, temperature, top-k, top-p and min-p (0 means that step cut it)."""

from __future__ import annotations

import torch

from model.sample import apply_repetition_penalty, filtered_logits
from model.sampling import SamplingParams

TOP_CANDIDATES = 10


def inspection_step(logits: torch.Tensor, params: SamplingParams, previous_ids: torch.Tensor, drawn: int, tokenizer) -> dict:
    raw = torch.softmax(logits.float(), dim=-1)
    penalized = apply_repetition_penalty(logits, previous_ids, params.repetition_penalty)
    if params.temperature == 0:
        final = torch.zeros_like(raw)
        final[int(torch.argmax(penalized))] = 1.0
    else:
        final = torch.softmax(filtered_logits(penalized, params), dim=-1)
    candidates = torch.topk(raw, min(TOP_CANDIDATES, raw.numel())).indices.tolist()
    if drawn not in candidates:
        candidates.append(drawn)

    def text(token_id: int) -> str:
        return tokenizer.token_bytes(token_id).decode("utf-8", errors="replace")

    return {
        "text": text(drawn),
        "candidates": [
            {"text": text(i), "raw_prob": float(raw[i]), "final_prob": float(final[i]), "drawn": i == drawn}
            for i in candidates
        ],
    }
