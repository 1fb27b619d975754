"""How many CPU threads an engine should use for a model of a given size.

Small models get one decode thread per 100 MB of weights and one prompt thread per 50 MB:
threads that sync at every tiny matrix cost more than they bring (2 cores: llama.cpp decoded
a 0.4M-parameter model at 4,000 tokens/s on 1 thread, 3.5 on 2). Large models decode on the
physical cores (decode is memory-bound; SMT siblings only add contention) and read prompts
on every core; never more than os.sched_getaffinity allows, at least 1.

Decoding leaves one core to everything else: llama.cpp's threads wait for each other at every
matrix, spinning, so one decode thread that another process keeps off its core stalls them all.
Gemma 3 270M on 2 cores with one kept busy (issue 22): 2.8 tokens/s on 2 threads, 62-84 on 1.
scripts/bench_threads_under_load.py, 2 cores already at a load average of 5-7 from other programs,
a 206 MB file with a 262,144-token vocabulary: 1 decode thread 15.1 tokens/s, 6.3 with one more
core kept busy; 2 threads 3.7 and 3.2. The 7 MB built-in model: 1 thread 492 and 216, 2 threads
14.9 and 9.2. Prompts still use every core: their matrices are large, so a wait costs little next
to the work, and prefill is compute-bound. Torch-free.
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
    decode, prompt = min(physical_cores(logical), logical - 1), logical  # a core left for the rest of the machine
    if model_bytes is not None:
        decode = min(decode, model_bytes // DECODE_BYTES_PER_THREAD)
        prompt = min(prompt, model_bytes // PROMPT_BYTES_PER_THREAD)
    return max(1, decode), max(1, prompt)
