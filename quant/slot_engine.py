"""SlotEngine: the llama.cpp engine serving many replies at once on parallel slots. No torch.

It is a LlamaEngine in everything but how a reply is computed: the file is checked and loaded, and
a conversation becomes prompt ids (chat template, thinking switch, fitting, stop ids and strings,
notices) by the very same code, the engine core's chat() and complete(). Only the core's last step,
`_generate`, is replaced: instead of running the reply loop here, the prepared reply goes to the
slot scheduler (quant/llama_slots.py), which runs it beside the others in one batch per step.
chat() returns that reply's events with a cancel() of its own, so one client's disconnect stops
its reply alone.

This runs in the process that loads it (`chatapp serve --parallel N` runs it in the server's own
process, in the scheduler's thread: llama.cpp releases the GIL while it decodes). The LoadedLlama
the loader makes keeps a small context of its own, unused; the slots' context is made here with
N sequences of `context_length` tokens each.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

from model.inference.backend import Event
from model.inference.reply_stream import ReplyStream
from quant.gguf_check import GGUFInfo, check_gguf, read_header
from quant.llama_engine import LlamaEngine
from quant.llama_load import FOREIGN_MAX_CONTEXT, context_for, load_llama
from quant.llama_slots import DEFAULT_PREFILL_CHUNK, SlotReply, SlotRequest, SlotScheduler, kv_cache_bytes

UNUSED_CONTEXT = 256  # the loader's own context: the slots have theirs, so this one is kept small
MAX_SLOTS = 64  # llama.cpp's LLAMA_MAX_SEQ


class SlotMemoryError(ValueError):
    """N slots whose KV cache does not fit in this machine's memory (one line)."""


def available_memory_bytes() -> int | None:
    """Memory the system can give without swapping: MemAvailable on Linux, free pages elsewhere."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def gigabytes(size: int) -> str:
    return f"{size / 1e9:.1f} GB" if size >= 1e8 else f"{size / 1e6:.0f} MB"


class _SlotsLoad:
    """What LlamaEngine.load takes as `loading`: the context the engine fits prompts to (a slot's),
    and a LoadedLlama whose own context is small (the slots' is made apart)."""

    def __init__(self, info: GGUFInfo, context: int, **options):
        self.info, self.context, self.options = info, context, options

    def result(self):
        return load_llama(self.info, UNUSED_CONTEXT, purpose="the llama.cpp backend", **self.options)


class SlotEngine(LlamaEngine):
    supports_inspection = False

    scheduler: SlotScheduler

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
    ) -> SlotEngine:
        """`slots` replies at once, each with a context of the file's own (at most max_context).
        A bad file raises GGUFFileError, slots whose KV cache would not fit in `memory_available`
        (default: what the system has now) SlotMemoryError; each is one line."""
        if not (isinstance(slots, int) and 1 <= slots <= MAX_SLOTS):
            raise ValueError(f"--parallel must be a whole number from 1 to {MAX_SLOTS}, got {slots!r}")
        path = Path(path).expanduser()
        info = check_gguf(path, read_header(path))
        options = dict(n_threads=n_threads, n_threads_batch=n_threads_batch, log_dir=log_dir)
        engine = cls.load(  # a classmethod: cls(...) made it, a SlotEngine
            path, info=info, loading=_SlotsLoad(info, context_for(info, max_context), **options),  # type: ignore[arg-type]
            state_cache_mb=0, state_disk_mb=0,
        )  # fmt: skip
        assert isinstance(engine, SlotEngine)
        try:
            engine._start_slots(slots, prefill_chunk, memory_available)
        except BaseException:
            engine.close()
            raise
        return engine

    def _start_slots(self, slots: int, prefill_chunk: int, memory_available: int | None) -> None:
        needed = kv_cache_bytes(self.llm.model, slots * self.context_length)
        available = memory_available if memory_available is not None else available_memory_bytes()
        if available is not None and needed > available:
            raise SlotMemoryError(
                f"--parallel {slots} needs {gigabytes(needed)} for the KV cache ({slots} slots x "
                f"{self.context_length:,} tokens) and {gigabytes(available)} of memory is available: "
                "lower --parallel or --context"
            )
        self.format_lock = threading.RLock()  # the prompt format's template variables are set per reply
        self.kv_cache_bytes = needed
        self.scheduler = SlotScheduler(
            self.llm.model,
            self.llm.context_params,
            slots,
            self.context_length,
            self.threads,
            prefill_chunk,
            self.format_lock,
        )

    @property
    def slots(self) -> int:
        return len(self.scheduler.slots)

    # --- the backend protocol: prompts prepared one at a time, replies run together ---

    def fit(self, *args, **kwargs):
        with self.format_lock:
            return super().fit(*args, **kwargs)

    def chat(self, *args, **kwargs) -> Iterator[Event]:
        with self.format_lock:
            return super().chat(*args, **kwargs)

    def complete(self, *args, **kwargs) -> Iterator[Event]:
        with self.format_lock:
            return super().complete(*args, **kwargs)

    def cancel(self) -> None:
        """Every running reply stops (a reply's own cancel() stops that one alone)."""
        self.scheduler.cancel_all()

    def close(self) -> None:
        scheduler = getattr(self, "scheduler", None)
        if scheduler is not None and scheduler.ctx is not None:
            scheduler.close()  # its context goes before the model it was made from
        super().close()

    def _generate(
        self, prompt, params, stop_ids, notices, use_cache, inspect, stop_strings, earlier_reply, reasoning=None
    ) -> SlotReply:
        """The engine core's reply, handed to the slots (the arguments are the core's)."""
        if inspect is not None:
            raise ValueError("the sampling inspector needs one reply at a time: serve with --parallel 1")
        budget = min(params.max_tokens, self.context_length - len(prompt))
        reply = ReplyStream(self.prompt_format, len(prompt), stop_strings, budget, reasoning)
        request = SlotRequest(prompt, params, stop_ids, notices, reply)
        request.on_finish = lambda finished: self._remember_reply(earlier_reply, finished)
        return SlotReply(self.scheduler, request)

    def _remember_reply(self, earlier_reply: list[int], reply: ReplyStream) -> None:
        """As the core does at a reply's end: the ids sampled for its text, so that the next turn's
        prompt holds exactly these ids (and finds them in a slot's cache). Called under format_lock."""
        if reply.ended_on_stop_string:
            return
        ids = earlier_reply + reply.generated
        self.known_replies = {self._decode(ids): ids} if not reply.thinking_tokens else {}
