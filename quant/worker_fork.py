"""The command line's llama.cpp worker, forked first thing: before chatapp imports anything else.

A cold `chatapp run --model F.gguf` waits on one thing above all: the worker importing llama.cpp.
So chatapp.launch forks it as soon as Python has started, with what the standard library gives
without imports of its own (a socket pair, an anonymous shared mapping, os.fork), instead of
multiprocessing's Process, whose import and start cost the worker's head start 20 ms. The app
imports multiprocessing's Connection after the fork, while the worker imports llama.cpp, and
leaves the worker with quant.worker_start (`keep_spare`), where the backend takes it as any other.

Linux only, and only while the app has no other thread (a fork copies one thread); elsewhere the
caller starts one the usual way (quant.worker_start.start_spare).
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
import time


class SharedCounter:
    """A 64-bit integer both processes see, as multiprocessing's Value("q") (`.value`): an anonymous
    shared mapping made before the fork. The app writes it; the worker reads it."""

    def __init__(self) -> None:
        import mmap

        self._map = mmap.mmap(-1, 8)

    @property
    def value(self) -> int:
        return int.from_bytes(self._map[:8], "little", signed=True)

    @value.setter
    def value(self, number: int) -> None:
        self._map[:8] = int(number).to_bytes(8, "little", signed=True)


class ForkedProcess:
    """A forked child, as much of multiprocessing's Process as the backend uses."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.exitcode: int | None = None  # as multiprocessing's: -N when signal N ended it

    def _reap(self, flags: int) -> None:
        if self.exitcode is not None:
            return
        try:
            pid, status = os.waitpid(self.pid, flags)
        except ChildProcessError:  # reaped elsewhere
            self.exitcode = -1
            return
        if pid:
            self.exitcode = os.waitstatus_to_exitcode(status)

    def is_alive(self) -> bool:
        self._reap(os.WNOHANG)
        return self.exitcode is None

    def join(self, timeout: float | None = None) -> None:
        if timeout is None:
            self._reap(0)
            return
        deadline = time.monotonic() + timeout
        while self.is_alive() and time.monotonic() < deadline:
            time.sleep(0.005)

    def kill(self) -> None:
        if self.is_alive():
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def end(self) -> None:
        """At the app's exit: a worker still running is of no use (multiprocessing does the same to
        its daemonic children)."""
        self.kill()
        self.join(timeout=2)


def can_fork_now() -> bool:
    return sys.platform == "linux" and threading.active_count() == 1


def fork_spare() -> None:
    """Fork a worker that imports llama.cpp and waits for the app to name a file; the app's end goes
    to quant.worker_start's spare."""
    import _socket

    ours, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM)
    cancelled_request = SharedCounter()
    pid = os.fork()
    if pid == 0:
        _worker(theirs, ours, cancelled_request)  # never returns
    theirs.close()
    process = ForkedProcess(pid)
    atexit.register(process.end)
    from multiprocessing.connection import Connection

    from quant.llama_log import default_log_dir
    from quant.worker_start import StartedWorker, keep_spare

    keep_spare(StartedWorker(process, Connection(ours.detach()), cancelled_request, str(default_log_dir())))


def _worker(theirs, ours, cancelled_request: SharedCounter) -> None:
    """The child: never returns into the app's code, and leaves without the app's exit handlers."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C is the app's to handle
    code = 1
    try:
        ours.close()
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)  # the terminal's input is the app's
        os.close(devnull)
        from multiprocessing.connection import Connection

        from quant.llama_log import default_log_dir
        from quant.worker_process import serve

        serve(Connection(theirs.detach()), cancelled_request, str(default_log_dir()))
        code = 0
    finally:
        os._exit(code)
