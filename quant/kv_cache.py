"""Saved llama.cpp KV states of recent prompts, so that a conversation's prompt is computed once.

After each reply the engine saves its sequence's state (llama_state_seq_get_data: the KV cache of
every token in the context) keyed by the model file's identity (path, size, modification time, the
context size) and the exact token ids. Before a prefill it takes the saved state sharing the longest
prefix with the new prompt, if that beats what the context already holds, and computes only the
rest: switching conversations and back, regenerating, editing the last message, the next turn, a
shared system prompt, a server whose clients resend the whole conversation, a restart.

Kept in memory (least recently used first out, bounded in bytes) and on disk under a folder the
caller names (chatapp passes its user cache dir: quant never imports chatapp), bounded, the oldest
file evicted first. A file is written whole to a temporary name, then renamed; one that is damaged
or truncated (its checksum, its lengths) is ignored with a log line and removed, never an error.
No torch, no numpy.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
import threading
import time
from array import array
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

MAGIC = b"CHATKV01"
SUFFIX = ".kvstate"
DEFAULT_MEMORY_BYTES = 512 * 1024 * 1024
DEFAULT_DISK_BYTES = 2 * 1024 * 1024 * 1024
MIN_REUSE = 16  # fewer shared tokens than this are not worth a restore
STALE_TEMPORARY_S = 3600


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


@dataclass(frozen=True)
class ModelIdentity:
    """What makes a saved state valid: the same file (path, size, modification time) in a context of the
    same size. A changed file or template never restores a wrong state: the ids differ or the file does."""

    path: str
    size: int
    mtime_ns: int
    context: int

    @classmethod
    def of(cls, path: str | Path, context: int) -> ModelIdentity:
        stat = os.stat(path)
        return cls(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns, context)

    @property
    def key(self) -> str:
        text = json.dumps([self.path, self.size, self.mtime_ns, self.context])
        return hashlib.sha256(text.encode()).hexdigest()[:20]


def _ids_key(ids: Sequence[int]) -> str:
    return hashlib.sha256(array("i", ids).tobytes()).hexdigest()[:20]


class StateCache:
    """States by token ids, for one model: in memory and, with `folder`, on disk."""

    def __init__(
        self,
        identity: ModelIdentity,
        folder: str | Path | None = None,
        memory_bytes: int = DEFAULT_MEMORY_BYTES,
        disk_bytes: int = DEFAULT_DISK_BYTES,
    ):
        self.identity = identity
        self.folder = Path(folder) if folder is not None else None
        self.memory_bytes, self.disk_bytes = memory_bytes, disk_bytes
        self.memory: OrderedDict[tuple[int, ...], bytes] = OrderedDict()
        self.memory_used = 0
        self._writer: threading.Thread | None = None

    def resize(self, memory_bytes: int, disk_bytes: int) -> None:
        """New bounds: the least recently used states leave memory, the oldest files the disk, until
        each fits; 0 keeps none there."""
        self.flush()
        self.memory_bytes, self.disk_bytes = memory_bytes, disk_bytes
        while self.memory_used > self.memory_bytes:
            _, evicted = self.memory.popitem(last=False)
            self.memory_used -= len(evicted)
        if self.folder is not None and self.folder.is_dir():
            self._evict_files()

    # --- finding ---

    def best(self, prompt: Sequence[int], better_than: int = 0) -> tuple[list[int], bytes] | None:
        """(the saved ids, their state) sharing the longest prefix with `prompt`, if longer than
        `better_than` and MIN_REUSE; None otherwise."""
        best_ids, best_length = None, max(better_than, MIN_REUSE - 1)
        for ids in self.memory:
            length = common_prefix(ids, prompt)
            if length > best_length:
                best_ids, best_length = ids, length
        if best_ids is not None:
            self.memory.move_to_end(best_ids)
            return list(best_ids), self.memory[best_ids]
        return self._best_on_disk(prompt, best_length)

    def _files(self) -> list[Path]:
        if self.folder is None or self.disk_bytes <= 0:
            return []
        try:
            return [p for p in self.folder.iterdir() if p.name.startswith(self.identity.key) and p.suffix == SUFFIX]
        except OSError:
            return []

    def _best_on_disk(self, prompt: Sequence[int], better_than: int) -> tuple[list[int], bytes] | None:
        self.flush()
        chosen, chosen_length = None, better_than
        for path in self._files():
            ids = self._read_ids(path)
            if ids is None:
                continue
            length = common_prefix(ids, prompt)
            if length > chosen_length:
                chosen, chosen_length = path, length
        if chosen is None:
            return None
        found = self._read(chosen)
        if found is None:
            return self._best_on_disk(prompt, better_than)  # that one was damaged (and is gone): the next
        ids, state = found
        self._remember(tuple(ids), state)
        try:
            os.utime(chosen)  # recently used: the last to be evicted
        except OSError:
            pass
        return ids, state

    # --- saving ---

    def put(self, ids: Sequence[int], state: bytes) -> None:
        """Keep a state: in memory now, on disk in the background (a big model's state is hundreds of MB:
        the next request does not wait for it)."""
        if not ids or not state:
            return
        self._remember(tuple(ids), state)
        if self.folder is not None and self.disk_bytes > 0:
            self.flush()  # one write at a time
            self._writer = threading.Thread(target=self._write, args=(list(ids), state), daemon=True)
            self._writer.start()

    def flush(self) -> None:
        """Wait for the file being written."""
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.join()

    def _remember(self, ids: tuple[int, ...], state: bytes) -> None:
        if len(state) > self.memory_bytes:
            return
        old = self.memory.pop(ids, None)
        if old is not None:
            self.memory_used -= len(old)
        # a saved prompt that is a prefix of this one is no longer needed
        for shorter in [k for k in self.memory if len(k) < len(ids) and ids[: len(k)] == k]:
            self.memory_used -= len(self.memory.pop(shorter))
        self.memory[ids] = state
        self.memory_used += len(state)
        while self.memory_used > self.memory_bytes:
            _, evicted = self.memory.popitem(last=False)
            self.memory_used -= len(evicted)

    # --- the files ---

    def _header(self, ids: Sequence[int]) -> bytes:
        identity = json.dumps(
            {
                "path": self.identity.path,
                "size": self.identity.size,
                "mtime_ns": self.identity.mtime_ns,
                "context": self.identity.context,
            }  # fmt: skip
        ).encode()
        return MAGIC + struct.pack("<II", len(identity), len(ids)) + identity + array("i", ids).tobytes()

    def _write(self, ids: list[int], state: bytes) -> None:
        assert self.folder is not None
        path = self.folder / f"{self.identity.key}-{_ids_key(ids)}{SUFFIX}"
        body = self._header(ids) + struct.pack("<Q", len(state)) + state
        temporary = path.with_suffix(".tmp")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with open(temporary, "wb") as file:
                file.write(body + hashlib.sha256(body).digest())
            os.replace(temporary, path)
        except OSError as error:
            log.warning("kv cache: could not write %s: %s", path, error)
            return
        self._evict_files()

    def _evict_files(self) -> None:
        """Oldest first (by modification time: a file read is touched), down to disk_bytes in all."""
        assert self.folder is not None
        entries = []
        try:
            for path in self.folder.iterdir():
                stat = path.stat()
                if path.suffix == SUFFIX:
                    entries.append((stat.st_mtime_ns, stat.st_size, path))
                elif path.suffix == ".tmp" and time.time() - stat.st_mtime > STALE_TEMPORARY_S:
                    path.unlink()  # a write the process did not live to finish
        except OSError:
            return
        total = sum(size for _, size, _ in entries)
        for _, size, path in sorted(entries):
            if total <= self.disk_bytes:
                break
            try:
                path.unlink()
            except OSError:
                continue
            total -= size

    def _ignore(self, path: Path, why: str) -> None:
        log.warning("kv cache: ignoring %s: %s", path, why)
        try:
            path.unlink()
        except OSError:
            pass

    def _read_ids(self, path: Path) -> list[int] | None:
        """The ids a file holds, from its header alone (the state is read only for the one chosen)."""
        try:
            with open(path, "rb") as file:
                head = file.read(len(MAGIC) + 8)
                if len(head) < len(MAGIC) + 8 or head[: len(MAGIC)] != MAGIC:
                    self._ignore(path, "not a state file (damaged or truncated)")
                    return None
                identity_length, count = struct.unpack_from("<II", head, len(MAGIC))
                identity = file.read(identity_length)
                data = file.read(4 * count)
        except OSError as error:
            log.warning("kv cache: cannot read %s: %s", path, error)
            return None
        if len(identity) != identity_length or len(data) != 4 * count:
            self._ignore(path, "truncated")
            return None
        try:
            same = json.loads(identity) == json.loads(self._header([])[len(MAGIC) + 8 :])
        except ValueError:
            same = False
        if not same:
            self._ignore(path, "written for another model file")
            return None
        return array("i", data).tolist()

    def _read(self, path: Path) -> tuple[list[int], bytes] | None:
        """(ids, state) of a whole file whose checksum holds; None (and the file removed) otherwise."""
        try:
            data = path.read_bytes()
        except OSError as error:
            log.warning("kv cache: cannot read %s: %s", path, error)
            return None
        body, digest = data[:-32], data[-32:]
        if len(data) < len(MAGIC) + 8 + 32 or hashlib.sha256(body).digest() != digest:
            self._ignore(path, "damaged or truncated (checksum)")
            return None
        identity_length, count = struct.unpack_from("<II", body, len(MAGIC))
        at = len(MAGIC) + 8 + identity_length
        ids = array("i", body[at : at + 4 * count]).tolist()
        at += 4 * count
        if at + 8 > len(body):
            self._ignore(path, "truncated")
            return None
        (state_length,) = struct.unpack_from("<Q", body, at)
        state = body[at + 8 :]
        if len(state) != state_length or len(ids) != count:
            self._ignore(path, "truncated")
            return None
        return ids, state
