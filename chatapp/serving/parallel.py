"""`chatapp serve --parallel N`: a GGUF model opened on N parallel slots (quant/slot_engine.py).

The slots run in the server's own process, in one scheduler thread beside the event loop: llama.cpp
releases the GIL while it decodes, and every reply's events go straight to the request that reads
them. A worker process (as for one reply at a time) would need a protocol of many replies in flight
at once; what it would bring, surviving a native abort, matters less for a server that a supervisor
restarts than for the TUI. With --parallel 1, or a model that is not a GGUF file, nothing here runs:
the model opens as it always has (chatapp.models.opening.open_model).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

SMALL_MODEL_BYTES = 4_000_000_000  # up to here, 4 slots by default
MEDIUM_MODEL_BYTES = 16_000_000_000  # up to here, 2; past it, 1


def default_parallel(model_bytes: int, cores: int) -> int:
    """Slots for a model of `model_bytes` on `cores` cores: batching pays most where one reply leaves the
    CPU idle between small matrices (small models), and never more slots than cores."""
    by_size = 4 if model_bytes <= SMALL_MODEL_BYTES else 2 if model_bytes <= MEDIUM_MODEL_BYTES else 1
    return max(1, min(by_size, cores))


def open_slots(path, slots: int, context: int | None, threads: tuple[int | None, int | None]) -> Any:
    """A SlotEngine on the GGUF file at `path`: `slots` sequences of `context` tokens each (None: the file's
    own, at most llama_load's cap for foreign files); `threads`: (decode, prompt), None for automatic."""
    from chatapp.paths import log_dir
    from quant.llama_load import FOREIGN_MAX_CONTEXT
    from quant.slot_engine import SlotEngine

    return SlotEngine.open(
        path,
        slots,
        max_context=context or FOREIGN_MAX_CONTEXT,
        n_threads=threads[0],
        n_threads_batch=threads[1],
        log_dir=log_dir(),
    )


def open_parallel(
    spec: str | None,
    resolve: Callable[[str | None], Any],
    backend: str = "auto",
    parallel: int | None = None,
    *,
    context: int | None = None,
    threads: tuple[int | None, int | None] = (None, None),
) -> tuple[Any, str] | None:
    """(a SlotEngine on parallel slots, the model's name) for the model `spec` names; None where it is
    served one reply at a time (then open_model opens it as always): --parallel 1, a model folder, a
    model on another server.
    `resolve`: spec -> ModelRef (chatapp.models.resolve.resolve_model, passed in: chatapp.models
    imports this package). `threads`: (decode, prompt), None for automatic. `parallel` None picks
    default_parallel, fewer where their KV cache would not fit the memory; a --parallel given that
    does not fit is refused (SlotMemoryError, one line)."""
    from chatapp.serving.endpoint import parse_endpoint_spec
    from model.inference.threads import available_cores

    if parallel is not None and not (isinstance(parallel, int) and parallel >= 1):
        raise ValueError(f"--parallel must be a whole number >= 1, got {parallel!r}")
    if parallel == 1 or parse_endpoint_spec(spec) is not None:
        return None
    ref = resolve(spec or None)
    if ref.kind != "gguf" or backend == "torch":
        if parallel is not None:
            raise ValueError(f"--parallel {parallel} needs a GGUF model: the torch engine makes one reply at a time")
        return None
    if context is not None and context < 16:
        raise ValueError(f"--context must be at least 16 tokens, got {context}")
    from quant.slot_engine import SlotMemoryError

    slots = parallel or default_parallel(ref.size_bytes, available_cores())
    while slots > 1:
        try:
            engine = open_slots(ref.path, slots, context, threads)
        except SlotMemoryError:
            if parallel is not None:
                raise
            slots //= 2  # the default is a wish, not a demand: fewer slots that fit
            continue
        return engine, ref.name
    return None
