"""The llama.cpp worker process's side: load the model the app names, answer its requests.

quant.worker_start starts the process (it runs `serve`); quant.llama_worker.WorkerBackend is the
app's side. The process writes its stdout and stderr (llama.cpp prints there on an abort) to
`llama-worker.log` in the log folder, never onto the user's terminal. No torch.
"""

from __future__ import annotations

import os
import signal
from multiprocessing.connection import Connection
from pathlib import Path

from model.errors import one_line

TYPE_CHECKING = False
if TYPE_CHECKING:
    from quant.llama_engine import LlamaEngine

WORKER_LOG = "llama-worker.log"


class _RequestCancel:
    """The worker's cancel flag: set when the app cancelled this request (or a later one)."""

    def __init__(self, cancelled_request, request_id: int):
        self.cancelled_request, self.request_id = cancelled_request, request_id

    def is_set(self) -> bool:
        return self.cancelled_request.value >= self.request_id

    def set(self) -> None:
        self.cancelled_request.value = self.request_id

    def clear(self) -> None:
        pass  # the app side starts each request with a new id instead


def _redirect_output(log_path: Path) -> None:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def serve(conn, cancelled_request, log_dir: str) -> None:
    """The worker process (quant.worker_start spawns it): import llama.cpp while the app checks the
    file, load the model once the app sends ("load", path, GGUFInfo, options) (check_gguf ran in the
    app: the file is not read again here), then answer requests until told to close."""
    os.environ["GGML_NO_BACKTRACE"] = "1"  # an abort prints one line, not a gdb session
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C is the app's to handle
    try:
        _redirect_output(Path(log_dir) / WORKER_LOG)
    except OSError:
        pass
    try:
        from quant.llama_native import bindings

        bindings()  # the slow import, done while the app checks the file
    except ImportError:
        pass  # load_llama says so in one line
    if not conn.poll():  # nothing to load yet: the engine's modules import while the app decides
        import quant.llama_engine  # noqa: F401
    try:
        operation, path, info, options = conn.recv()
    except (EOFError, OSError, ValueError):
        return  # the app found the file bad, or went away
    if operation != "load":
        return
    try:
        engine = _load(path, info, options, log_dir)
    except Exception as error:  # noqa: BLE001 - reported to the app as one line
        conn.send(("error", (type(error).__name__, one_line(error, 300))))
        return
    conn.send(
        (
            "ready",
            {
                "model_name": engine.model_name,
                "context_length": engine.context_length,
                "trained_context_length": engine.trained_context_length,
                "threads": engine.threads,
            },
        )
    )
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return
        operation, request_id, arguments = request
        if operation == "close":
            engine.close()
            return
        engine.cancel_flag = _RequestCancel(cancelled_request, request_id)
        try:
            _answer(conn, engine, operation, arguments)
        except Exception as error:  # noqa: BLE001 - reported to the app as one line
            conn.send(("error", (type(error).__name__, one_line(error, 300))))


def _load(path: str, info, options: dict, log_dir: str):
    """The engine, with llama.cpp reading the file (in a thread, without the GIL) while the engine's
    own modules import, when they have not yet."""
    from quant.llama_load import BackgroundLoad

    load_options = ("max_context", "n_threads", "n_threads_batch", "n_gpu_layers")
    loading = BackgroundLoad(info, log_dir=log_dir, **{key: options[key] for key in load_options if key in options})
    from quant.llama_engine import LlamaEngine

    return LlamaEngine.load(path, log_dir=log_dir, bounded_template_memory=True, info=info, loading=loading, **options)


def _answer(conn: Connection, engine: LlamaEngine, operation: str, arguments: dict) -> None:
    if operation == "fit":
        conn.send(("result", engine.fit(**arguments)))
    elif operation == "prompt_ids":
        conn.send(("result", engine.prompt_ids(**arguments)))
    elif operation == "reset_cache":
        engine.reset_cache()
        conn.send(("result", None))
    elif operation == "set_cache_limits":
        engine.set_cache_limits(**arguments)
        conn.send(("result", None))
    elif operation in ("chat", "complete", "generate_ids"):
        if arguments.pop("inspect", False):
            arguments["inspect"] = lambda step: conn.send(("inspect", step))
        events = getattr(engine, operation)(**arguments)
        conn.send(("started", None))
        for event in events:
            conn.send(("event", event))
        conn.send(("end", None))
    else:
        raise ValueError(f"unknown request {operation!r}")
