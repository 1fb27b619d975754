"""How many CPU threads an engine should use for a model of a given size.

Decoding one token multiplies a vector by every weight matrix: a small model's
matrices take microseconds, and threads that must wait for each other at every
matrix cost more than they bring. Measured here (2 cores, busy): llama.cpp
decoded a 0.4M-parameter model at 4,000 tokens/s on 1 thread and 3.5 on 2; the
torch engine decoded the 23 MB built-in model at 160 tokens/s on 1 thread and
81 on 2. So a model gets about one thread per 100 MB of weights (one per 50 MB
for prompts, which are matrix-matrix work), and never more than the cores.
Torch-free: both engines use it.
"""

from __future__ import annotations

import os


def available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def default_threads(model_bytes: int | None = None) -> tuple[int, int]:
    """(decode threads, prompt threads)."""
    n = available_cores()
    decode = n if n <= 4 else max(4, n // 2)  # decode gains little past the physical cores
    decode, batch = max(1, min(decode, 16)), max(1, min(n, 32))
    if model_bytes is not None:
        decode = max(1, min(decode, model_bytes // 100_000_000))
        batch = max(1, min(batch, model_bytes // 50_000_000))
    return decode, batch
