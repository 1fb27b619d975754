"""Starting a llama.cpp worker process, early: standard library only.

A worker is a fresh Python (multiprocessing's "spawn") that imports llama.cpp, a third of a second
or more, before it can load anything. So chatapp.launch starts one (`start_spare`) when the command
line names a GGUF file, before it imports even the argument parser, and the command line, having
parsed its arguments, tells it what to load (or starts one then), before its own imports; the worker then
imports llama.cpp while the app imports, finds and checks the model, and waits for the app's
("load", path, GGUFInfo, options). `quant.llama_worker.WorkerBackend` takes that spare
(`take_spare`) or starts a worker of its own. This module imports nothing heavy, so calling it costs
the app only the spawn. chatapp.launch forks its worker with quant.worker_fork instead, before it
imports even multiprocessing.
"""

from __future__ import annotations

import sys
import threading
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

_lock = threading.Lock()
_spare: list[StartedWorker] = []


class StartedWorker(NamedTuple):
    process: Any  # multiprocessing's Process, or quant.worker_fork.ForkedProcess: is_alive, join, exitcode, kill
    conn: Connection  # the app's end of the pipe
    cancelled_request: Any  # a shared 64-bit integer (.value): the highest request id the app cancelled
    log_dir: str
    loading: tuple[str, Any, dict] | None = None  # (path, GGUFInfo, options) it was told to load, if any


def _worker_main(conn: Connection, cancelled_request, log_dir: str, app_end: Connection | None = None) -> None:
    """`app_end`: a forked worker's copy of the app's end of the pipe, closed at once: else the worker
    would keep its own pipe open and never see the app go (an app killed left it waiting forever)."""
    if app_end is not None:
        app_end.close()
    from quant.worker_process import serve

    serve(conn, cancelled_request, log_dir)


def start_resource_tracker() -> None:
    """multiprocessing's resource tracker, started with the real stderr: under the TUI,
    sys.stderr is Textual's capture, whose fileno() the tracker cannot pass on."""
    from multiprocessing import resource_tracker

    captured = sys.stderr
    try:
        usable = captured.fileno() >= 0
    except (AttributeError, OSError, ValueError):
        usable = False
    if not usable and sys.__stderr__ is not None:
        sys.stderr = sys.__stderr__
    try:
        resource_tracker.ensure_running()
    finally:
        sys.stderr = captured


def spawn_worker(log_dir: str, early: bool = False) -> StartedWorker:
    """A new worker process, importing llama.cpp; it loads nothing until it is told what.

    Started with "spawn" (a fresh interpreter), which is safe in a process with threads (the
    TUI). `early`: the command line, before its imports and with no thread but the main one, on
    Linux, forks instead: the worker then skips Python's start, multiprocessing's resource tracker
    (another interpreter) and the imports it shares with the app, about a tenth of a second."""
    import multiprocessing

    forking = early and sys.platform == "linux" and threading.active_count() == 1
    context: Any = multiprocessing.get_context("fork" if forking else "spawn")
    if not forking:
        start_resource_tracker()
    cancelled_request = context.Value("q", 0, lock=False)
    ours, theirs = context.Pipe()
    arguments = (theirs, cancelled_request, log_dir, ours if forking else None)
    process = context.Process(target=_worker_main, name="chatapp-llama-worker", daemon=True, args=arguments)
    process.start()
    theirs.close()
    return StartedWorker(process, ours, cancelled_request, log_dir)


def start_spare(log_dir: str, path: str | None = None, options: dict | None = None) -> None:
    """Start a worker now for the GGUF model the app is about to open (at most one waits). With
    `path`, check the file here, right after the fork, and have the worker load it with `options`
    (what quant.llama_worker.WorkerBackend would send): a file the check refuses is not sent, and
    the backend, checking it again, says why."""
    with _lock:
        if _spare and (_spare[0].log_dir != str(log_dir) or not _spare[0].process.is_alive()):
            discard(_spare.pop())  # of no use to anyone now
        if _spare and (path is None or _spare[0].loading is not None):
            return
        # one already started (chatapp.launch, before the command line was parsed) is told what to load
        worker = _spare[0] if _spare else spawn_worker(str(log_dir), early=True)
        if path is not None:
            from quant.gguf_check import check_gguf

            try:
                info = check_gguf(path)
            except Exception:  # noqa: BLE001 - a bad file: the backend checks it again and says why
                info = None
            if info is not None:
                worker.conn.send(("load", str(path), info, dict(options or {})))
                worker = worker._replace(loading=(str(path), info, dict(options or {})))
        _spare[:] = [worker]


def keep_spare(worker: StartedWorker) -> None:
    """A worker started elsewhere (quant.worker_fork) waits here for the backend to take it."""
    with _lock:
        previous = _spare[:]
        _spare[:] = [worker]
    for other in previous:
        discard(other)


def take_spare(log_dir: str, path: str, options: dict) -> StartedWorker | None:
    """The worker start_spare started, if it is alive, logs where the caller wants and loads
    nothing or this very file with these very options (but the cache limits, which the caller gives
    it again); else None (and that worker is stopped)."""
    with _lock:
        spare = _spare.pop() if _spare else None
    if spare is None:
        return None
    usable = spare.log_dir == str(log_dir) and spare.process.is_alive()
    wanted = (str(path), fixed_at_load(options))
    if spare.loading is not None and (spare.loading[0], fixed_at_load(spare.loading[2])) != wanted:
        usable = False
    if usable:
        return spare
    discard(spare)
    return None


CHANGEABLE_AFTER_LOAD = ("state_cache_mb", "state_disk_mb")  # the backend sends them again (set_cache_limits)


def fixed_at_load(options: dict) -> dict:
    """The load options a worker cannot change once loaded: a spare loaded with other ones is no use."""
    return {key: value for key, value in options.items() if key not in CHANGEABLE_AFTER_LOAD}


def discard(worker: StartedWorker) -> None:
    worker.conn.close()
    worker.process.kill()
    worker.process.join(timeout=2)


def discard_spare() -> None:
    """Stop a spare nobody took (the model turned out not to be a GGUF file)."""
    with _lock:
        spare = _spare.pop() if _spare else None
    if spare is not None:
        discard(spare)
