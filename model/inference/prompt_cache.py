"""The KV caches of recent prompts, so that coming back to a conversation computes only its new tokens.

The torch engine keeps one static KV cache: the core reuses the prefix of the last prompt only, so
A -> B -> A would compute A again from its first token. After each reply the engine keeps a copy of
the cache's filled positions here, keyed by the exact token ids they hold; before a prefill it takes
the entry sharing the longest prefix with the new prompt, when that beats what the cache holds now,
copies those positions back and computes only the rest (quant/kv_cache.py does the same for
llama.cpp's states, with a disk behind it).

Bounded in bytes, least recently used first out. An entry whose ids are a prefix of a newer one's is
dropped (the conversation went on: the newer holds all it held). Torch-free: a snapshot is the
engine's own object, with its size in bytes; this file only picks.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Generic, TypeVar

from model.inference.reply_stream import common_prefix_length

DEFAULT_PROMPT_CACHE_MB = 256
Snapshot = TypeVar("Snapshot")


class PromptCache(Generic[Snapshot]):
    def __init__(self, max_bytes: int = DEFAULT_PROMPT_CACHE_MB * 2**20):
        self.max_bytes = max_bytes
        self.entries: OrderedDict[tuple[int, ...], tuple[Snapshot, int]] = OrderedDict()  # oldest first
        self.bytes = 0

    def __len__(self) -> int:
        return len(self.entries)

    def best(self, prompt: Sequence[int], better_than: int = 0) -> tuple[int, Snapshot] | None:
        """(n, snapshot): the entry sharing the longest prefix with prompt, n tokens of it, when n is more
        than better_than; None when none does. The entry becomes the most recently used."""
        best_key, best_length = None, better_than
        prompt = list(prompt)
        for key in self.entries:
            length = common_prefix_length(list(key), prompt)
            if length > best_length:
                best_key, best_length = key, length
        if best_key is None:
            return None
        self.entries.move_to_end(best_key)
        return best_length, self.entries[best_key][0]

    def put(self, ids: Sequence[int], snapshot: Snapshot, size: int) -> None:
        """Keep snapshot (size bytes) for ids; the oldest entries go until the total fits the bound
        (one larger than the bound alone is not kept)."""
        key = tuple(ids)
        for older in [k for k in self.entries if len(k) <= len(key) and key[: len(k)] == k]:
            self._drop(older)
        if not key or size > self.max_bytes:
            return
        self.entries[key] = (snapshot, size)
        self.bytes += size
        while self.bytes > self.max_bytes:
            self._drop(next(iter(self.entries)))

    def resize(self, max_bytes: int) -> None:
        """A new bound (the settings' [cache] memory_mb); the oldest entries go until the total fits."""
        self.max_bytes = max_bytes
        while self.bytes > self.max_bytes:
            self._drop(next(iter(self.entries)))

    def clear(self) -> None:
        self.entries.clear()
        self.bytes = 0

    def _drop(self, key: tuple[int, ...]) -> None:
        _, size = self.entries.pop(key)
        self.bytes -= size
