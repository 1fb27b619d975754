"""Parallel slots on one llama.cpp context (the model's side of model/inference/slots.py). No torch.

One context holds N sequences (a slot each, its own sequence id and its own part of the KV cache);
a step is one `llama_decode` of a batch with a sequence id per token, and each slot's logits row
is read from that batch. llama.cpp runs a step of one token on the decode threads and any larger
batch (several slots' tokens, a prompt's chunk) on the prompt threads, as in llama-server.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

from model.inference.slots import BatchEntry


class LlamaSlots:
    """N sequences of `slot_context` tokens on one context of `model` (a llama_model pointer), for
    batches of up to `batch_size` tokens. `base_params`: the llama_context_params the single-reply
    engine uses (flash attention, KV types, rope): the same here, so that a reply's logits are the
    ones that engine computes. `threads`: (n_threads, n_threads_batch)."""

    def __init__(
        self, model: Any, base_params: Any, slots: int, slot_context: int, batch_size: int, threads: tuple[int, int]
    ):
        import llama_cpp

        self.n_vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(model))
        params = llama_cpp.llama_context_params.from_buffer_copy(base_params)  # the single engine's settings
        params.n_ctx = slots * slot_context  # split evenly: the KV cache is not unified across sequences
        params.n_seq_max = slots
        params.n_batch = params.n_ubatch = batch_size
        params.n_threads, params.n_threads_batch = threads
        self.ctx = llama_cpp.llama_init_from_model(model, params)
        if not self.ctx:
            raise RuntimeError(f"llama.cpp could not make a context of {slots} slots x {slot_context} tokens")
        self.memory = llama_cpp.llama_get_memory(self.ctx)
        self.batch = llama_cpp.llama_batch_init(batch_size, 0, 1)

    def decode(self, entries: list[BatchEntry]) -> dict[int, np.ndarray]:
        import llama_cpp

        for index, entry in enumerate(entries):
            self.batch.token[index] = entry.token
            self.batch.pos[index] = entry.position
            self.batch.n_seq_id[index] = 1
            self.batch.seq_id[index][0] = entry.seq_id
            self.batch.logits[index] = entry.wants_logits
        self.batch.n_tokens = len(entries)
        result = llama_cpp.llama_decode(self.ctx, self.batch)
        if result != 0:
            raise RuntimeError(f"llama.cpp could not decode a batch of {len(entries)} tokens (error {result})")
        return {index: self._logits(index) for index, entry in enumerate(entries) if entry.wants_logits}

    def _logits(self, row: int) -> np.ndarray:
        import llama_cpp

        pointer = llama_cpp.llama_get_logits_ith(self.ctx, row)
        return np.ctypeslib.as_array(pointer, shape=(self.n_vocab,)).copy()

    def forget(self, seq_id: int, start: int) -> bool:
        import llama_cpp

        return bool(llama_cpp.llama_memory_seq_rm(self.memory, seq_id, start, -1))

    def save(self, seq_id: int, length: int, max_bytes: int) -> tuple[bytes, int] | None:
        """The sequence's KV state (all of its `length` positions) as llama.cpp writes it."""
        import llama_cpp

        size = llama_cpp.llama_state_seq_get_size(self.ctx, seq_id)
        if not 0 < size <= max_bytes:
            return None
        buffer = (ctypes.c_uint8 * size)()
        written = llama_cpp.llama_state_seq_get_data(self.ctx, buffer, size, seq_id)
        return (ctypes.string_at(buffer, written), written) if written else None

    def restore(self, seq_id: int, saved: bytes) -> bool:
        import llama_cpp

        self.forget(seq_id, 0)
        buffer = (ctypes.c_uint8 * len(saved)).from_buffer_copy(saved)
        if llama_cpp.llama_state_seq_set_data(self.ctx, buffer, len(saved), seq_id) == 0:
            self.forget(seq_id, 0)  # a state llama.cpp refuses: the sequence computes everything
            return False
        return True

    def close(self) -> None:
        import llama_cpp

        llama_cpp.llama_batch_free(self.batch)
        llama_cpp.llama_free(self.ctx)
        self.ctx = None


def _metadata_int(model: Any, key: str) -> int | None:
    import llama_cpp

    buffer = ctypes.create_string_buffer(64)
    if llama_cpp.llama_model_meta_val_str(model, key.encode(), buffer, len(buffer)) < 0:
        return None
    try:
        return int(buffer.value.decode())
    except ValueError:
        return None


def kv_cache_bytes(model: Any, tokens: int) -> int:
    """The KV cache llama.cpp allocates for `tokens` positions of `model`, at 16 bits per value
    (its default type): keys and values, every layer, every KV head (an upper bound where layers use
    a sliding window). A head's size is the file's key_length / value_length when it has them
    (Gemma's heads are wider than n_embd / n_head)."""
    import llama_cpp

    layers = llama_cpp.llama_model_n_layer(model)
    heads, kv_heads = llama_cpp.llama_model_n_head(model), llama_cpp.llama_model_n_head_kv(model)
    buffer = ctypes.create_string_buffer(64)
    llama_cpp.llama_model_meta_val_str(model, b"general.architecture", buffer, len(buffer))
    architecture = buffer.value.decode(errors="replace")
    head_size = llama_cpp.llama_model_n_embd(model) // max(heads, 1)
    key_size = _metadata_int(model, f"{architecture}.attention.key_length") or head_size
    value_size = _metadata_int(model, f"{architecture}.attention.value_length") or head_size
    return layers * tokens * kv_heads * (key_size + value_size) * 2
