"""llama.cpp's log lines go to a file, never onto the user's screen.

llama.cpp (and ggml under it) print through one callback; llama-cpp-python
installs one that writes to stderr. `route_logs` replaces it with one that
appends to `llama.log` in a log folder: the one given, or $CHATAPP_HOME/data/logs,
or the user data dir's `logs` (the same place chatapp.paths.log_dir() names;
duplicated here because quant must not import chatapp). While a `capture()`
block is open, the lines are also collected (the quantizer's report uses them).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

LOG_FILE_NAME = "llama.log"
MAX_LOG_BYTES = 5_000_000  # past this, the log is moved to llama.log.1 when next opened

_lock = threading.Lock()
_state: dict = {"callback": None, "file": None, "path": None, "captures": []}


def default_log_dir() -> Path:
    home = os.environ.get("CHATAPP_HOME")
    if home:
        return Path(home).expanduser() / "data" / "logs"
    import platformdirs

    return Path(platformdirs.user_data_dir("chatapp")) / "logs"


def _write(level: int, text: bytes, user_data) -> None:
    """llama.cpp's callback. An exception cannot cross its C frames (ctypes prints it and drops
    it): a Ctrl+C that lands here is handed back to the main thread, raised when the C call returns."""
    try:
        _write_line(text)
    except KeyboardInterrupt:
        import _thread

        _thread.interrupt_main()


def _write_line(text: bytes) -> None:
    line = text.decode("utf-8", errors="replace") if text else ""
    with _lock:
        log = _state["file"]
        if log is not None:
            try:
                log.write(line)
                if line.endswith("\n"):
                    log.flush()
            except (OSError, ValueError):
                pass
        listeners = list(_state["captures"])
    for lines, on_line in listeners:
        lines.append(line)
        if on_line is not None:
            try:
                on_line(line)
            except Exception:  # an exception cannot cross llama.cpp's C frames
                pass


def _open_private(path: Path):
    """The log opened for appending, readable by its owner only (mode 0600, as llama-worker.log is
    made); an older file made with looser rights is tightened."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.fchmod(fd, 0o600)
    except OSError:
        pass  # not ours to change (another user's file): still written, as before
    return open(fd, "a", encoding="utf-8")


def route_logs(log_dir: str | Path | None = None) -> Path | None:
    """Send llama.cpp's logs to LOG_DIR/llama.log; returns the file's path.

    If the folder cannot be written, the lines are dropped (still off the screen).
    """
    import llama_cpp

    path = Path(log_dir) if log_dir is not None else default_log_dir()
    path = path / LOG_FILE_NAME
    with _lock:
        if _state["path"] != path:
            if _state["file"] is not None:
                _state["file"].close()
                _state["file"], _state["path"] = None, None
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                if path.exists() and path.stat().st_size > MAX_LOG_BYTES:
                    os.replace(path, path.with_name(LOG_FILE_NAME + ".1"))
                _state["file"] = _open_private(path)
                _state["path"] = path
            except OSError:
                pass
        if _state["callback"] is None:
            # kept referenced for the life of the process: llama.cpp holds the pointer
            _state["callback"] = llama_cpp.llama_log_callback(_write)
    llama_cpp.llama_log_set(_state["callback"], ctypes.c_void_p(0))
    return _state["path"]


@contextlib.contextmanager
def capture(on_line: Callable[[str], None] | None = None) -> Iterator[list[str]]:
    """Collect the log lines written while the block runs (route_logs first);
    on_line(line), if given, is called with each (it must not raise)."""
    lines: list[str] = []
    entry = (lines, on_line)
    with _lock:
        _state["captures"].append(entry)
    try:
        yield lines
    finally:
        with _lock:
            _state["captures"].remove(entry)
