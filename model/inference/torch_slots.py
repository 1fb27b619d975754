"""Parallel slots on the torch engine: our GPT serving many replies at once (`chatapp serve --parallel N`
with a model folder, the built-in model included).

`TorchSlots` is the model's side of model/inference/slots.py: one KV cache made for N sequences
(`GPT.new_cache(batch=N)`), a row each. A step's decoding slots (one token each, every one at its
own position) run as one batched forward pass (`GPT.decode_rows`); a slot's prompt chunk runs as
the single engine's prefill on that slot's row of the cache. Nothing needs removing when a slot
takes a new prompt: a row's positions past the ones written are masked and then overwritten.
With compile, the decoding slots' step is compiled as the single engine's is (model/inference/
compiled_step.py, in the background, eager until it is ready): `GPT.decode_slots` runs the cache's
first rows at once, each at its own position, storing the keys and values of the rows that decode
only, so that its shapes never change; it is compiled for 1, 2, 4... rows up to N, and a step runs
the fewest that hold its highest decoding slot (the scheduler fills the lowest free slot first: one
reply on 8 slots runs one row). Eager, only the decoding rows run (`GPT.decode_rows`).

`TorchSlotEngine` is a TorchEngine in everything but how a reply is computed (SlotsMixin hands
each reply to the scheduler), as quant/slot_engine.py is for llama.cpp.
"""

from __future__ import annotations

import threading
from itertools import groupby
from pathlib import Path

import numpy as np
import torch

from model.inference.compiled_step import CompiledStep, compile_by_default, first_rows, use_compile_cache
from model.inference.slots import (
    DEFAULT_PREFILL_CHUNK,
    DEFAULT_SLOT_CACHE_MB,
    BatchEntry,
    SlotScheduler,
    SlotsMixin,
    check_slot_count,
    check_slot_memory,
)
from model.inference.torch_engine import TorchEngine
from model.network.gpt import KVCache


class TorchSlots:
    """`slots` sequences of the model's context each, on `model` (a GPT); `threads`: (decode, prompt)
    CPU threads, or None to leave torch's; `compile`: compile the step of all the slots in the background."""

    def __init__(self, model, slots: int, device: str, threads: tuple[int, int] | None, compile: bool = False):
        self.model, self.device, self.threads = model, device, threads
        self.n_vocab = model.config.vocab_size
        self.cache = model.new_cache(batch=slots)
        self.compiling = CompiledStep(model, device, slots=slots) if compile else None
        self.compiled_step = None  # once adopted: GPT.decode_slots compiled, on self.cache
        self.row_buckets: list[int] = []  # the row counts it was compiled for
        self.compile_status = "compiling" if compile else "off"  # then "on" or "failed: ..."

    def decode(self, entries: list[BatchEntry]) -> dict[int, np.ndarray]:
        runs = [list(run) for _, run in groupby(enumerate(entries), key=lambda item: item[1].seq_id)]
        tokens = [run[0] for run in runs if len(run) == 1]
        chunks = [run for run in runs if len(run) > 1]
        logits: dict[int, np.ndarray] = {}
        with torch.inference_mode():
            if tokens:
                self._use_threads(for_prompt=False)
                computed = self._decode_tokens([entry for _, entry in tokens])
                logits |= {index: computed[i] for i, (index, entry) in enumerate(tokens) if entry.wants_logits}
            if chunks:
                self._use_threads(for_prompt=True)
            for chunk in chunks:
                index, last = chunk[-1]
                ids = torch.tensor([[entry.token for _, entry in chunk]], dtype=torch.long, device=self.device)
                computed = self.model.prefill(ids, self._row(last.seq_id), chunk[0][1].position)
                if last.wants_logits:
                    logits[index] = computed[0].float().cpu().numpy()
        return logits

    def _decode_tokens(self, entries: list[BatchEntry]) -> np.ndarray:
        """The logits of one token in each entry's sequence, in the entries' order."""
        step = self._step()
        if step is None:
            ids = torch.tensor([[entry.token] for entry in entries], dtype=torch.long, device=self.device)
            positions = self._longs([entry.position for entry in entries])
            rows = self._longs([entry.seq_id for entry in entries])
            return self.model.decode_rows(ids, positions, rows, self.cache).float().cpu().numpy()
        highest = max(entry.seq_id for entry in entries)
        bucket = next(count for count in self.row_buckets if count > highest)
        row_ids, row_positions, written = [[0] for _ in range(bucket)], [0] * bucket, [False] * bucket
        for entry in entries:
            row_ids[entry.seq_id], row_positions[entry.seq_id] = [entry.token], entry.position
            written[entry.seq_id] = True
        every_row = step(
            self._longs(row_ids),
            self._longs(row_positions),
            torch.tensor(written, device=self.device),
            *first_rows(self.cache, bucket),
        )
        return every_row.float().cpu().numpy()[[entry.seq_id for entry in entries]]

    def _step(self):
        """The compiled step of all the slots once it is ready (taken up here, between two steps), else None."""
        compiling = self.compiling
        if compiling is not None:
            compiling.decoding()  # the compile pauses while the slots decode
            if compiling.ready.is_set():
                self.compiling, self.compile_status = None, compiling.state
                if compiling.step is not None:
                    self.compiled_step, self.cache = compiling.adopt(self.cache)
                    self.row_buckets = compiling.row_buckets
        return self.compiled_step

    def wait_for_compile(self, timeout: float | None = None) -> str:
        if self.compiling is not None:
            self.compiling.wait(timeout)
        return self.compile_state

    @property
    def compile_state(self) -> str:
        """ "compiling", "on" (also when ready and taken up at the next step), "off" or "failed: ..."."""
        return self.compiling.state if self.compiling is not None else self.compile_status

    def _longs(self, values: list) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.long, device=self.device)

    def _row(self, seq_id: int) -> KVCache:
        """Sequence `seq_id`'s row of the cache, as a cache of one (views: prefill writes into the whole)."""
        keys, values = self.cache.keys, self.cache.values
        return KVCache([k[seq_id : seq_id + 1] for k in keys], [v[seq_id : seq_id + 1] for v in values])

    def _use_threads(self, for_prompt: bool) -> None:
        if self.threads is not None and self.device == "cpu":
            torch.set_num_threads(self.threads[1] if for_prompt else self.threads[0])

    def forget(self, seq_id: int, start: int) -> bool:
        return True  # positions past those a step writes are masked, then overwritten

    def save(self, seq_id: int, length: int, max_bytes: int) -> tuple[KVCache, int] | None:
        """Copies of the row's first `length` positions, every layer."""
        keys, values = self.cache.keys, self.cache.values
        size = sum(t[seq_id, :, :length].numel() * t.element_size() for t in keys + values)
        if size > max_bytes:
            return None
        copy = KVCache([k[seq_id, :, :length].clone() for k in keys], [v[seq_id, :, :length].clone() for v in values])
        return copy, size

    def restore(self, seq_id: int, saved: KVCache) -> bool:
        for live, kept in zip(self.cache.keys + self.cache.values, saved.keys + saved.values, strict=True):
            live[seq_id, :, : kept.size(1)].copy_(kept)
        return True

    def close(self) -> None:
        self.cache = KVCache([], [])

    @property
    def kv_cache_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.cache.keys + self.cache.values)


class TorchSlotEngine(SlotsMixin, TorchEngine):
    @classmethod
    def open(
        cls,
        folder: str | Path,
        slots: int,
        *,
        device: str = "auto",
        threads: int | None = None,
        threads_batch: int | None = None,
        prefill_chunk: int = DEFAULT_PREFILL_CHUNK,
        memory_available: int | None = None,
        cache_mb: int = DEFAULT_SLOT_CACHE_MB,
        compile: str = "off",
        compile_cache: str | Path | None = None,
    ) -> TorchSlotEngine:
        """`slots` replies at once on the model folder's GPT, each with the model's whole context.
        Slots whose KV cache would not fit in `memory_available` (default: what the system has now)
        raise SlotMemoryError (one line). `cache_mb`: the slots' prompt cache (0: none). `compile`: on,
        off or auto, the step of all the slots compiled as TorchEngine.load compiles the single one."""
        check_slot_count(slots)
        engine = cls.load(folder, device=device, compile="off", threads=threads, threads_batch=threads_batch)
        assert isinstance(engine, TorchSlotEngine)  # a classmethod: cls(...) made it
        wanted = compile == "on" or (compile == "auto" and compile_by_default(engine.device))
        if wanted:
            use_compile_cache(compile_cache)
        engine._start_slots(slots, prefill_chunk, memory_available, cache_mb, wanted)
        return engine

    def _start_slots(
        self, slots: int, prefill_chunk: int, memory_available: int | None, cache_mb: int, compile: bool
    ) -> None:
        one_slot = sum(t.numel() * t.element_size() for t in self.cache.keys + self.cache.values)
        check_slot_memory(one_slot * slots, slots, self.context_length, memory_available)
        self.format_lock = threading.RLock()  # the prompt format is shared by the replies being prepared
        self.slots_model = TorchSlots(self.model, slots, self.device, self.threads, compile)
        self.kv_cache_bytes = self.slots_model.kv_cache_bytes
        self.scheduler = SlotScheduler(
            self.slots_model, slots, self.context_length, prefill_chunk, self.format_lock, cache_mb
        )

    @property
    def compile_state(self) -> str:
        return self.slots_model.compile_state

    def wait_for_compile(self, timeout: float | None = None) -> str:
        return self.slots_model.wait_for_compile(timeout)

    def close(self) -> None:
        self.close_slots()
        super().close()
