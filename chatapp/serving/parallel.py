"""`chatapp serve --parallel N`: a model opened on N parallel slots (model/inference/slots.py): a
GGUF file on llama.cpp (quant/slot_engine.py), a model folder on the torch engine
(model/inference/torch_slots.py).

The slots run in the server's own process, in one scheduler thread beside the event loop: llama.cpp
and torch release the GIL while they compute, and every reply's events go straight to the request
that reads them. A worker process (as for one reply at a time) would need a protocol of many replies in flight
at once; what it would bring, surviving a native abort, matters less for a server that a supervisor
restarts than for the TUI. With --parallel 1, or a model on another server, nothing here runs: the model opens as it
always has (chatapp.models.opening.open_model).
"""

from __future__ import annotations

import importlib.util
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


def open_torch_slots(
    path, slots: int, device: str, threads: tuple[int | None, int | None], compile: str = "off"
) -> Any:
    """A TorchSlotEngine on the model folder at `path` (the torch engine: imported only here); `compile`:
    on, off or auto, the step of all the slots compiled in the background as --compile does for one reply."""
    from chatapp.paths import compile_cache_dir
    from model.inference.torch_slots import TorchSlotEngine

    return TorchSlotEngine.open(
        path,
        slots,
        device=device,
        threads=threads[0],
        threads_batch=threads[1],
        compile=compile,
        compile_cache=compile_cache_dir(),
    )


def open_parallel(
    spec: str | None,
    resolve: Callable[[str | None], Any],
    backend: str = "auto",
    parallel: int | None = None,
    *,
    context: int | None = None,
    threads: tuple[int | None, int | None] = (None, None),
    device: str = "auto",
    compile: str = "off",
) -> tuple[Any, str] | None:
    """(an engine on parallel slots, the model's name) for the model `spec` names; None where it is
    served one reply at a time (then open_model opens it as always): --parallel 1, a model on
    another server, a GGUF file asked to run on torch.
    `resolve`: spec -> ModelRef (chatapp.models.resolve.resolve_model, passed in: chatapp.models
    imports this package). `threads`: (decode, prompt), None for automatic; `compile`: the torch step's
    --compile (on, off, auto). `parallel` None picks
    default_parallel, fewer where their KV cache would not fit the memory; a --parallel given that
    does not fit is refused (SlotMemoryError, one line)."""
    from chatapp.serving.endpoint import parse_endpoint_spec
    from model.inference.threads import available_cores

    if parallel is not None and not (isinstance(parallel, int) and parallel >= 1):
        raise ValueError(f"--parallel must be a whole number >= 1, got {parallel!r}")
    if parallel == 1 or parse_endpoint_spec(spec) is not None:
        return None
    ref = resolve(spec or None)
    on_llama = ref.kind == "gguf"
    engine_asked = {"torch": False, "llama.cpp": True}.get(backend, on_llama)
    if engine_asked != on_llama or (not on_llama and importlib.util.find_spec("torch") is None):
        if parallel is not None:
            raise ValueError(
                f"--parallel {parallel} runs a GGUF file on llama.cpp and a model folder on torch "
                f"(installed, and without --backend {backend} for {ref.name})"
            )
        return None  # open_model runs it, or says in one line why it cannot
    if context is not None and context < 16:
        raise ValueError(f"--context must be at least 16 tokens, got {context}")

    def opener(count: int) -> Any:
        if on_llama:
            return open_slots(ref.path, count, context, threads)
        return open_torch_slots(ref.path, count, device, threads, compile)

    from model.inference.slots import SlotMemoryError

    slots = parallel or default_parallel(ref.size_bytes, available_cores())
    while slots > 1:
        try:
            engine = opener(slots)
        except SlotMemoryError:
            if parallel is not None:
                raise
            slots //= 2  # the default is a wish, not a demand: fewer slots that fit
            continue
        return engine, ref.name
    return None
