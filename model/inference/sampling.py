"""Sampling: the parameters, validated, and drawing the next token from logits.

One sampler for both engines (torch hands over its logits as numpy), so every
SamplingParams field means the same on both and a seed draws the same tokens
from the same logits. Order: repetition penalty, temperature (0 is greedy),
top-k, top-p, min-p. `filtered_logits` returns the logits with every cut token
at -inf, so the tests and the sampling inspector see exactly which set was
allowed. Torch-free.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

TOP_CANDIDATES = 10  # tokens the sampling inspector shows per step
MAX_TEMPERATURE = 100.0  # past it every token is as likely as any other: noise, not a setting
MAX_COUNT = 10**9  # top_k and max_tokens: past this a number is a typo (llama.cpp takes a 32-bit int)
MIN_REPETITION_PENALTY = 1e-3  # below it logits / penalty overflow (1e-320 is positive but subnormal)
MAX_REPETITION_PENALTY = 1e3
MAX_TEMPLATE_KWARGS = 32  # chat-template variables one request may set


class SamplingError(ValueError):
    pass


@dataclass
class SamplingParams:
    temperature: float = 0.8  # 0 means greedy
    top_k: int = 0  # 0 means off
    top_p: float = 0.95  # 1 means off
    min_p: float = 0.0  # 0 means off
    repetition_penalty: float = 1.0  # 1 means off
    max_tokens: int = 256
    seed: int | None = None  # None: a fresh seed per request
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    thinking: bool | None = None  # a reasoning model's thinking on / off (its template's switch); None: its default
    template_kwargs: dict = field(
        default_factory=dict
    )  # more chat-template variables (a server's chat_template_kwargs)

    def validate(self) -> SamplingParams:
        def finite(value) -> bool:
            return isinstance(value, (int, float)) and math.isfinite(value)

        checks = [
            (
                "temperature",
                finite(self.temperature) and 0 <= self.temperature <= MAX_TEMPERATURE,
                f"must be a finite number >= 0 and at most {MAX_TEMPERATURE:g} (0 is greedy)",
            ),
            (
                "top_k",
                isinstance(self.top_k, int) and 0 <= self.top_k <= MAX_COUNT,
                f"must be an integer >= 0 and at most {MAX_COUNT:,} (0 is off)",
            ),
            ("top_p", finite(self.top_p) and 0 < self.top_p <= 1, "must be in (0, 1] (1 is off)"),
            ("min_p", finite(self.min_p) and 0 <= self.min_p <= 1, "must be in [0, 1] (0 is off)"),
            (
                "repetition_penalty",
                finite(self.repetition_penalty)
                and MIN_REPETITION_PENALTY <= self.repetition_penalty <= MAX_REPETITION_PENALTY,
                f"must be a number in [{MIN_REPETITION_PENALTY:g}, {MAX_REPETITION_PENALTY:g}] (1 is off)",
            ),
            (
                "max_tokens",
                isinstance(self.max_tokens, int) and 1 <= self.max_tokens <= MAX_COUNT,
                f"must be an integer >= 1 and at most {MAX_COUNT:,}",
            ),
            (
                "seed",
                self.seed is None or (isinstance(self.seed, int) and 0 <= self.seed < 2**63),
                "must be an integer in [0, 2^63)",
            ),
        ]
        checks += [
            ("thinking", self.thinking is None or isinstance(self.thinking, bool), "must be true, false or null"),
            (
                "template_kwargs",
                isinstance(self.template_kwargs, dict)
                and len(self.template_kwargs) <= MAX_TEMPLATE_KWARGS
                and all(
                    isinstance(k, str) and 0 < len(k) <= 64 and _template_value(v)
                    for k, v in self.template_kwargs.items()
                ),
                f"must be an object of at most {MAX_TEMPLATE_KWARGS} names to strings, numbers, booleans or null",
            ),
        ]
        for name, ok, rule in checks:
            if not ok:
                raise SamplingError(f"{name} {rule}, got {getattr(self, name)!r}")
        return self

    def to_dict(self) -> dict:
        return asdict(self)


def _template_value(value) -> bool:
    """A chat-template variable a request may set: a short scalar (no objects the template could walk)."""
    if value is None or isinstance(value, bool):
        return True
    if isinstance(value, int):
        return abs(value) < 2**63
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, str) and len(value) <= 1000


def apply_repetition_penalty(logits: np.ndarray, previous_ids, penalty: float) -> np.ndarray:
    import numpy as np

    if penalty == 1.0 or len(previous_ids) == 0:
        return logits
    logits = logits.copy()
    ids = np.unique(np.asarray(previous_ids, dtype=np.int64))
    seen = logits[ids]
    logits[ids] = np.where(seen > 0, seen / penalty, seen * penalty)
    return logits


def softmax(logits: np.ndarray) -> np.ndarray:
    import numpy as np

    probs = np.exp(logits - logits.max())
    return probs / probs.sum()


def top_p_kept(logits: np.ndarray, top_p: float) -> np.ndarray:
    """Ids of the smallest set of most likely tokens whose mass reaches top_p; among equally likely
    tokens, the lower ids first (so the set does not depend on how a partition happened to order them).

    Found among the m most likely tokens (and those tied with the m-th), m doubling until the set ends
    inside them: a 150,000-token vocabulary is not sorted whole for every token."""
    import numpy as np

    probs = softmax(logits)
    m = min(64, probs.size)
    while True:
        threshold = np.partition(probs, probs.size - m)[probs.size - m] if m < probs.size else 0.0
        top = np.flatnonzero(probs >= threshold) if threshold > 0 else np.flatnonzero(probs > 0)
        order = top[np.argsort(-probs[top], kind="stable")]  # most likely first; ties in id order
        mass_before = np.cumsum(probs[order]) - probs[order]
        kept = max(int(np.count_nonzero(mass_before < top_p)), 1)  # always keep the most likely token
        if kept < order.size or threshold == 0:
            return order[:kept]
        m = min(2 * m, probs.size)


def filter_stages(logits: np.ndarray, params: SamplingParams):
    """The temperature-scaled logits, then the logits after each filter that is on, in the order the sampler
    applies them: ("temperature", ...), ("top-k", ...), ("top-p", ...), ("min-p", ...). A cut token is at -inf."""
    import numpy as np

    logits = np.asarray(logits, dtype=np.float64) / max(params.temperature, 1e-8)
    yield "temperature", logits
    if 0 < params.top_k < logits.size:
        kth = np.partition(logits, -params.top_k)[-params.top_k]
        logits = np.where(logits < kth, -np.inf, logits)
        yield "top-k", logits
    if params.top_p < 1.0:
        kept = np.full(logits.shape, -np.inf)
        ids = top_p_kept(logits, params.top_p)
        kept[ids] = logits[ids]
        logits = kept
        yield "top-p", logits
    if params.min_p > 0.0:
        probs = softmax(logits)
        logits = np.where(probs < params.min_p * probs.max(), -np.inf, logits)
        yield "min-p", logits


def filtered_logits(logits: np.ndarray, params: SamplingParams) -> np.ndarray:
    """Temperature-scaled logits with tokens outside top-k / top-p / min-p at -inf."""
    *_, (_, last) = filter_stages(logits, params)
    return last


def final_probabilities(penalized: np.ndarray, params: SamplingParams) -> np.ndarray:
    """What the draw uses: one-hot for greedy, else the softmax of the filtered logits."""
    import numpy as np

    if params.temperature == 0:
        probs = np.zeros(penalized.shape)
        probs[int(np.argmax(penalized))] = 1.0
        return probs
    return softmax(filtered_logits(penalized, params))


def drawable(penalized: np.ndarray, params: SamplingParams) -> tuple[np.ndarray, np.ndarray]:
    """(ids in id order, their probabilities): what the draw chooses from. The first filter that is on
    (top-k, else top-p) picks the candidates over the whole vocabulary, and the rest is computed over those
    alone: the same tokens and probabilities as over the whole vocabulary with every other token at 0, but
    without a few softmaxes over 262,144 logits per token. The top-k threshold is taken on the unscaled
    logits: dividing by the temperature keeps their order."""
    import numpy as np

    if 0 < params.top_k < penalized.size:
        ids = top_k_ids(penalized, params.top_k)
        return ids, final_probabilities(penalized[ids], replace(params, top_k=0))
    if params.top_p < 1.0:
        scaled = np.asarray(penalized, dtype=np.float64) / max(params.temperature, 1e-8)
        ids = np.sort(top_p_kept(scaled, params.top_p))
        return ids, final_probabilities(penalized[ids], replace(params, top_k=0, top_p=1.0))
    return np.arange(penalized.size), final_probabilities(penalized, params)


TOP_K_BLOCK = 256  # logits per block whose maximum bounds the top-k search


def top_k_ids(logits: np.ndarray, k: int) -> np.ndarray:
    """Ids (in id order) of the logits at least as large as the k-th largest, ties included. The k-th
    largest of the blocks' maxima is a lower bound of the k-th largest logit (k blocks reach it), so
    the partition runs over the few logits that pass it: over 262,144 logits, 0.16 ms instead of 0.25."""
    import numpy as np

    whole_blocks = logits.size - logits.size % TOP_K_BLOCK
    if whole_blocks // TOP_K_BLOCK > k:
        maxima = logits[:whole_blocks].reshape(-1, TOP_K_BLOCK).max(axis=1)
        candidates = np.flatnonzero(logits >= np.partition(maxima, -k)[-k])
    else:
        candidates = np.arange(logits.size)
    kth = np.partition(logits[candidates], -k)[-k]
    return candidates[logits[candidates] >= kth]


def sample_next(logits, params: SamplingParams, previous_ids, rng: np.random.Generator) -> int:
    import numpy as np

    penalized = apply_repetition_penalty(np.asarray(logits, dtype=np.float32), previous_ids, params.repetition_penalty)
    if params.temperature == 0:
        return int(np.argmax(penalized))
    ids, probs = drawable(penalized, params)
    cdf = np.cumsum(probs)
    # the first token whose cumulative mass passes a uniform draw (never one at probability 0)
    return int(ids[min(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"), cdf.size - 1)])


def inspection_step(
    logits,
    params: SamplingParams,
    previous_ids,
    drawn: int,
    token_text: Callable[[int], str],
    control_name: Callable[[int], str | None] = lambda token_id: None,
) -> dict:
    """What the sampling inspector shows for one generated token:

        {"token_id": the drawn id, "text", "rank": the drawn token's 1-based rank under the raw logits,
         "candidates": [{"id", "text", "raw_prob", "final_prob", "drawn", "cut_by"}, ...]}

    A control token (no text of its own) is written by its name with "control": True.
    The candidates are the most likely tokens under the raw logits (and the drawn one, wherever it ranks);
    final_prob is after the penalty, temperature, top-k, top-p and min-p. cut_by names what left a
    candidate at probability 0: the first filter that removed it, in the sampler's own order
    (filter_stages), "greedy" at temperature 0, "temperature" when no filter did but a low temperature
    left it too little to be drawn, None when it could have been drawn."""
    import numpy as np

    logits = np.asarray(logits, dtype=np.float32)
    raw = softmax(logits.astype(np.float64))
    penalized = apply_repetition_penalty(logits, previous_ids, params.repetition_penalty)
    final = final_probabilities(penalized, params)
    count = min(TOP_CANDIDATES, raw.size)
    top = np.argpartition(-raw, count - 1)[:count]
    candidates = [int(i) for i in top[np.argsort(-raw[top], kind="stable")]]
    if drawn not in candidates:
        candidates.append(drawn)
    cut_by = _cut_by(penalized, params, final, candidates)

    def token(token_id: int) -> dict:
        text = token_text(token_id)
        name = None if text else control_name(token_id)
        return {"text": name, "control": True} if name else {"text": text}

    return {
        "token_id": int(drawn),
        **token(drawn),
        "rank": raw_rank(raw, drawn),
        "candidates": [
            {
                "id": i,
                **token(i),
                "raw_prob": float(raw[i]),
                "final_prob": float(final[i]),
                "drawn": i == drawn,
                "cut_by": cut_by[i],
            }
            for i in candidates
        ],
    }


def raw_rank(probs: np.ndarray, token: int) -> int:
    """The token's 1-based place in a stable descending sort of probs, without sorting the vocabulary."""
    import numpy as np

    value = probs[token]
    return int(np.count_nonzero(probs > value) + np.count_nonzero(probs[:token] == value) + 1)


def _cut_by(penalized: np.ndarray, params: SamplingParams, final: np.ndarray, ids: list[int]) -> dict:
    import numpy as np

    if params.temperature == 0:
        return {i: None if final[i] > 0 else "greedy" for i in ids}
    reasons = dict.fromkeys(ids)
    for name, stage in filter_stages(penalized, params):
        for i in ids:
            if reasons[i] is None and stage[i] == -np.inf:
                reasons[i] = name  # "temperature" here: the logit was -inf before any filter
    for i in ids:
        if reasons[i] is None and final[i] == 0.0:
            reasons[i] = "temperature"  # kept by every filter, but exp() of its scaled logit is 0
    return reasons
