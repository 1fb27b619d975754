"""Parallel slots on the torch engine: our GPT serving many replies at once (`chatapp serve --parallel N`
with a model folder, the built-in model included).

`TorchSlots` is the model's side of model/inference/slots.py: one KV cache made for N sequences
(`GPT.new_cache(batch=N)`), a row each. A step's decoding slots (one token each, every one at its
own position) run as one batched forward pass (`GPT.decode_rows`); a slot's prompt chunk runs as
the single engine's prefill on that slot's row of the cache. Nothing needs removing when a slot
takes a new prompt: a row's positions past the ones written are masked and then overwritten.
The step is eager (the rows and their positions change at every step; the single engine's
compiled step keeps one shape).

`TorchSlotEngine` is a TorchEngine in everything but how a reply is computed (SlotsMixin hands
each reply to the scheduler), as quant/slot_engine.py is for llama.cpp.
"""

from __future__ import annotations

import threading
from itertools import groupby
from pathlib import Path

import numpy as np
import torch

from model.inference.slots import (
    DEFAULT_PREFILL_CHUNK,
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
    CPU threads, or None to leave torch's."""

    def __init__(self, model, slots: int, device: str, threads: tuple[int, int] | None):
        self.model, self.device, self.threads = model, device, threads
        self.n_vocab = model.config.vocab_size
        self.cache = model.new_cache(batch=slots)

    def decode(self, entries: list[BatchEntry]) -> dict[int, np.ndarray]:
        runs = [list(run) for _, run in groupby(enumerate(entries), key=lambda item: item[1].seq_id)]
        tokens = [run[0] for run in runs if len(run) == 1]
        chunks = [run for run in runs if len(run) > 1]
        logits: dict[int, np.ndarray] = {}
        with torch.inference_mode():
            if tokens:
                self._use_threads(for_prompt=False)
                ids = torch.tensor([[entry.token] for _, entry in tokens], dtype=torch.long, device=self.device)
                positions = self._longs([entry.position for _, entry in tokens])
                rows = self._longs([entry.seq_id for _, entry in tokens])
                computed = self.model.decode_rows(ids, positions, rows, self.cache).float().cpu().numpy()
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

    def _longs(self, values: list[int]) -> torch.Tensor:
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
    ) -> TorchSlotEngine:
        """`slots` replies at once on the model folder's GPT, each with the model's whole context.
        Slots whose KV cache would not fit in `memory_available` (default: what the system has now)
        raise SlotMemoryError (one line)."""
        check_slot_count(slots)
        engine = cls.load(folder, device=device, compile="off", threads=threads, threads_batch=threads_batch)
        assert isinstance(engine, TorchSlotEngine)  # a classmethod: cls(...) made it
        engine._start_slots(slots, prefill_chunk, memory_available)
        return engine

    def _start_slots(self, slots: int, prefill_chunk: int, memory_available: int | None) -> None:
        one_slot = sum(t.numel() * t.element_size() for t in self.cache.keys + self.cache.values)
        check_slot_memory(one_slot * slots, slots, self.context_length, memory_available)
        self.format_lock = threading.RLock()  # the prompt format is shared by the replies being prepared
        model = TorchSlots(self.model, slots, self.device, self.threads)
        self.kv_cache_bytes = model.kv_cache_bytes
        self.scheduler = SlotScheduler(model, slots, self.context_length, prefill_chunk, self.format_lock)

    def close(self) -> None:
        self.close_slots()
        super().close()
