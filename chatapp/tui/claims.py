"""Each window owns the conversations it writes into, so that two windows on one history never write
into the same conversation.

A window claims the conversation it shows (and the one its reply streams into) with a lock file beside
the history, <history>.open/<id>.lock, locked (flock) while it holds it: the system lets go of the lock
when the process ends, however it ends, so a claim is never stale. A window that would open a
conversation another window holds starts a new one instead, or says so and stays where it is.
An in-memory history, a system without flock, or a folder that cannot be written claims nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no flock; each window is on its own
    fcntl = None  # type: ignore[assignment]

MEMORY = ":memory:"


class ConversationClaims:
    def __init__(self, history: Path | None):
        """history: the history file's path; None (or an in-memory one's) claims nothing."""
        usable = history is not None and str(history) != MEMORY and fcntl is not None
        self.folder = history.with_name(history.name + ".open") if history is not None and usable else None
        self._held: dict[int, int] = {}  # conversation id -> the locked file's descriptor

    def claim(self, conversation_id: int) -> bool:
        """Hold the conversation for this window; False when another window holds it."""
        if conversation_id in self._held:
            return True
        descriptor = self._lock(conversation_id)
        if descriptor is None:
            return False
        if descriptor >= 0:
            self._held[conversation_id] = descriptor
        return True

    def held_elsewhere(self, conversation_id: int) -> bool:
        """Whether another window holds it (asked without claiming it)."""
        if conversation_id in self._held:
            return False
        descriptor = self._lock(conversation_id)
        if descriptor is None:
            return True
        self._unlock(descriptor)
        return False

    def keep_only(self, conversation_ids: set[int]) -> None:
        """Let go of every conversation held but these."""
        for conversation_id in set(self._held) - conversation_ids:
            self._unlock(self._held.pop(conversation_id))

    def release_all(self) -> None:
        self.keep_only(set())

    def forget(self, conversation_id: int) -> None:
        """The conversation was deleted: its lock file goes too (removed while still locked)."""
        descriptor = self._held.pop(conversation_id, None)
        if descriptor is None or self.folder is None:
            return
        try:
            (self.folder / f"{conversation_id}.lock").unlink()
        except OSError:
            pass
        self._unlock(descriptor)

    def _lock(self, conversation_id: int) -> int | None:
        """The descriptor of the locked file; None when another window holds it; -1 when nothing can be
        locked here (then every window is on its own, as before claims)."""
        if self.folder is None or fcntl is None:
            return -1
        try:
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            descriptor = os.open(self.folder / f"{conversation_id}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            return -1
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            return None
        except OSError:  # a file system without locks (some network ones)
            os.close(descriptor)
            return -1
        return descriptor

    @staticmethod
    def _unlock(descriptor: int) -> None:
        if descriptor >= 0:
            os.close(descriptor)  # closing the only descriptor of the open file lets go of its lock
