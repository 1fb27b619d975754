"""Waiting for a process this test did not start itself (a worker an app left behind) to end."""

from __future__ import annotations

import os
import time


def assert_ends(pid: int, what: str, limit_s: float = 60) -> None:
    """The process `pid` ends within limit_s (a liveness bound, not a speed check: a worker imports
    llama.cpp first); else it is killed and the test fails naming `what`."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(pid, 9)
    raise AssertionError(f"{what} ({pid}) did not end")
