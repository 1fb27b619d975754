"""SlotEngine: the llama.cpp engine serving many replies at once on parallel slots. No torch.

It is a LlamaEngine in everything but how a reply is computed: the file is checked and loaded, and
a conversation becomes prompt ids (chat template, thinking switch, fitting, stop ids and strings,
notices) by the very same code, the engine core's chat() and complete(). Only the core's last step,
`_generate`, is replaced: instead of running the reply loop here, the prepared reply goes to the
slot scheduler (model/inference/slots.py, on quant/llama_slots.py), which runs it beside the others
in one batch per step.
chat() returns that reply's events with a cancel() of its own, so one client's disconnect stops
its reply alone.

This runs in the process that loads it (`chatapp serve --parallel N` runs it in the server's own
process, in the scheduler's thread: llama.cpp releases the GIL while it decodes). The LoadedLlama
the loader makes keeps a small context of its own, unused; the slots' context is made here with
N sequences of `context_length` tokens each.
"""

from __future__ import annotations

import threading
from pathlib import Path

from model.inference.slots import (
    DEFAULT_PREFILL_CHUNK,
    DEFAULT_SLOT_CACHE_MB,
    SlotMemoryError,
    SlotScheduler,
    SlotsMixin,
    check_slot_count,
    check_slot_memory,
)
from quant.gguf_check import GGUFInfo, check_gguf, read_header
from quant.llama_engine import LlamaEngine
from quant.llama_load import FOREIGN_MAX_CONTEXT, context_for, load_llama
from quant.llama_slots import LlamaSlots, kv_cache_bytes

__all__ = ["SlotEngine", "SlotMemoryError"]

UNUSED_CONTEXT = 256  # the loader's own context: the slots have theirs, so this one is kept small


class _SlotsLoad:
    """What LlamaEngine.load takes as `loading`: the context the engine fits prompts to (a slot's),
    and a LoadedLlama whose own context is small (the slots' is made apart)."""

    def __init__(self, info: GGUFInfo, context: int, **options):
        self.info, self.context, self.options = info, context, options

    def result(self):
        return load_llama(self.info, UNUSED_CONTEXT, purpose="the llama.cpp backend", **self.options)


class SlotEngine(SlotsMixin, LlamaEngine):
    @classmethod
    def open(
        cls,
        path: str | Path,
        slots: int,
        *,
        max_context: int = FOREIGN_MAX_CONTEXT,
        n_threads: int | None = None,
        n_threads_batch: int | None = None,
        log_dir: str | Path | None = None,
        prefill_chunk: int = DEFAULT_PREFILL_CHUNK,
        memory_available: int | None = None,
        cache_mb: int = DEFAULT_SLOT_CACHE_MB,
    ) -> SlotEngine:
        """`slots` replies at once, each with a context of the file's own (at most max_context).
        A bad file raises GGUFFileError, slots whose KV cache would not fit in `memory_available`
        (default: what the system has now) SlotMemoryError; each is one line. `cache_mb`: the slots'
        prompt cache (sequences saved for a later request that starts the same; 0: none)."""
        check_slot_count(slots)
        path = Path(path).expanduser()
        info = check_gguf(path, read_header(path))
        options = dict(n_threads=n_threads, n_threads_batch=n_threads_batch, log_dir=log_dir)
        engine = cls.load(  # a classmethod: cls(...) made it, a SlotEngine
            path, info=info, loading=_SlotsLoad(info, context_for(info, max_context), **options),  # type: ignore[arg-type]
            state_cache_mb=0, state_disk_mb=0,
        )  # fmt: skip
        assert isinstance(engine, SlotEngine)
        try:
            engine._start_slots(slots, prefill_chunk, memory_available, cache_mb)
        except BaseException:
            engine.close()
            raise
        return engine

    def _start_slots(self, slots: int, prefill_chunk: int, memory_available: int | None, cache_mb: int) -> None:
        needed = kv_cache_bytes(self.llm.model, slots * self.context_length)
        check_slot_memory(needed, slots, self.context_length, memory_available)
        self.format_lock = threading.RLock()  # the prompt format's template variables are set per reply
        self.kv_cache_bytes = needed
        model = LlamaSlots(
            self.llm.model, self.llm.context_params, slots, self.context_length, prefill_chunk + slots, self.threads
        )
        self.scheduler = SlotScheduler(model, slots, self.context_length, prefill_chunk, self.format_lock, cache_mb)

    def close(self) -> None:
        self.close_slots()
        super().close()
