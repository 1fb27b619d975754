"""UTF-8 safe streaming of byte-level tokens: a character split across tokens
is emitted only once all its bytes have arrived."""

from __future__ import annotations

import codecs


class Utf8Stream:
    def __init__(self):
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, data: bytes) -> str:
        return self._decoder.decode(data)

    def flush(self) -> str:
        return self._decoder.decode(b"", final=True)


class StopMatcher:
    """Holds back text that could be the start of a stop string.

    push() returns the text that is safe to show; `stopped` turns true when a
    stop string appears, and the text before it is all that is returned.
    """

    def __init__(self, stops: list[str]):
        self.stops = [s for s in stops if s]
        self.pending = ""
        self.stopped = False

    def push(self, text: str) -> str:
        if not self.stops:
            return text
        self.pending += text
        hits = [(self.pending.find(s), s) for s in self.stops if s in self.pending]
        if hits:
            at = min(hits)[0]
            self.stopped = True
            safe, self.pending = self.pending[:at], ""
            return safe
        hold = 0
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(self.pending)), 0, -1):
                if self.pending.endswith(stop[:n]):
                    hold = max(hold, n)
                    break
        safe = self.pending[: len(self.pending) - hold]
        self.pending = self.pending[len(safe):]
        return safe

    def flush(self) -> str:
        text, self.pending = self.pending, ""
        return text
