"""How many CPU threads an engine should use for a model of a given size.

Small models get one decode thread per 100 MB of weights and one prompt thread per 50 MB:
threads that sync at every tiny matrix cost more than they bring (2 cores: llama.cpp decoded
a 0.4M-parameter model at 4,000 tokens/s on 1 thread, 3.5 on 2). Large models decode on the
physical cores (decode is memory-bound; SMT siblings only add contention) and read prompts
on every core; never more than os.sched_getaffinity allows, at least 1. Torch-free.
"""

from __future__ import annotations

import os

DECODE_BYTES_PER_THREAD = 100_000_000
PROMPT_BYTES_PER_THREAD = 50_000_000
# With more logical cores than this, assume two SMT threads per physical core (x86 desktops and servers).
SMT_FREE_CORE_COUNT = 4


def available_cores() -> int:
    """Logical cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def physical_cores(logical: int) -> int:
    """An estimate of the physical cores behind `logical` cores, without reading the CPU topology."""
    if logical <= SMT_FREE_CORE_COUNT:
        return logical
    return max(SMT_FREE_CORE_COUNT, logical // 2)


def default_threads(model_bytes: int | None = None) -> tuple[int, int]:
    """(decode threads, prompt threads) for a model of `model_bytes` bytes (None: no size limit)."""
    logical = available_cores()
    decode, prompt = physical_cores(logical), logical
    if model_bytes is not None:
        decode = min(decode, model_bytes // DECODE_BYTES_PER_THREAD)
        prompt = min(prompt, model_bytes // PROMPT_BYTES_PER_THREAD)
    return max(1, decode), max(1, prompt)
