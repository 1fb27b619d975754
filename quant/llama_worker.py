"""llama.cpp in a worker process, behind the backend protocol (as Ollama runs its runner).

A GGUF file can make llama.cpp abort the whole process (a failed GGML_ASSERT,
an uncaught C++ exception): nothing in Python can catch that. So the app loads
and runs GGUF models in a child process. `WorkerBackend` is the app's side: it
sends each request down a pipe and turns what comes back into the protocol's
events. If the child dies, the request raises EngineCrashed with one line (the
signal and llama.cpp's last message, from the worker's log) and the next
request starts a new worker; the app keeps running.

The child writes its stdout and stderr (llama.cpp prints there on an abort)
to `llama-worker.log` in the log folder, never onto the user's terminal.
A cancel goes through shared memory, not the pipe, so it reaches a reply
within one token. No torch.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time
from dataclasses import replace
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, Callable, Iterator

from model.errors import one_line
from model.inference.backend import Backend, EngineBusy, EngineCrashed, Event, Finished
from model.text.chat_format import FittedPrompt, Message
from model.inference.sampling import SamplingParams
from quant.gguf_check import GGUFFileError, check_gguf
from quant.llama_log import default_log_dir

WORKER_LOG = "llama-worker.log"
USER_ERRORS = {"ValueError", "GGUFFileError", "TemplateError", "SamplingError"}  # raised again as ValueError


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


def _serve(conn, cancelled_request, path: str, options: dict, log_dir: str) -> None:
    """The worker process: load the model, then answer requests until told to close."""
    os.environ["GGML_NO_BACKTRACE"] = "1"  # an abort prints one line, not a gdb session
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C is the app's to handle
    try:
        _redirect_output(Path(log_dir) / WORKER_LOG)
    except OSError:
        pass
    from quant.llama_engine import LlamaEngine

    try:
        engine = LlamaEngine.load(path, log_dir=log_dir, bounded_template_memory=True, **options)
    except Exception as error:  # noqa: BLE001 - reported to the app as one line
        conn.send(("error", (type(error).__name__, one_line(error, 300))))
        return
    conn.send(("ready", {"model_name": engine.model_name, "context_length": engine.context_length,
                         "trained_context_length": engine.trained_context_length}))
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


def _answer(conn: Connection, engine: Backend, operation: str, arguments: dict) -> None:
    if operation == "fit":
        conn.send(("result", engine.fit(**arguments)))
    elif operation == "prompt_ids":
        conn.send(("result", engine.prompt_ids(**arguments)))
    elif operation == "reset_cache":
        engine.reset_cache()
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


def last_message(log_path: Path, offset: int) -> str:
    """llama.cpp's last words in the worker's log since `offset`: an assert, an exception, an error."""
    try:
        with open(log_path, "rb") as f:
            f.seek(offset)
            lines = f.read()[-20_000:].decode("utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    keys = ("GGML_ASSERT", "what():", "terminate called", "error", "Error", "failed")
    found = [line.strip() for line in lines if any(key in line for key in keys)]
    return (found[-1] if found else next((line.strip() for line in reversed(lines) if line.strip()), ""))[:300]


def _start_resource_tracker() -> None:
    """multiprocessing's resource tracker, started with the real stderr: under the TUI,
    sys.stderr is Textual's capture, whose fileno() the tracker cannot pass on."""
    from multiprocessing import resource_tracker

    captured = sys.stderr
    try:
        captured.fileno()
        usable = captured.fileno() >= 0
    except (AttributeError, OSError, ValueError):
        usable = False
    if not usable and sys.__stderr__ is not None:
        sys.stderr = sys.__stderr__
    try:
        resource_tracker.ensure_running()
    finally:
        sys.stderr = captured


def _signal_name(exitcode: int | None) -> str:
    if exitcode is None or exitcode >= 0:
        return f"exit code {exitcode}"
    try:
        return signal.Signals(-exitcode).name
    except ValueError:
        return f"signal {-exitcode}"


class WorkerBackend:
    """The backend protocol over a llama.cpp worker process."""

    name = "llama.cpp"
    supports_inspection = True
    supports_continue = True
    model_name: str  # these three are the worker's answer once it has loaded the model (_start)
    context_length: int
    trained_context_length: int

    def __init__(self, path: str | Path, log_dir: str | Path | None = None, **options):
        self.path = Path(path).expanduser()
        self.info = check_gguf(self.path)  # the cheap checks, before any process starts
        self.ours = self.info.chatapp
        self.options = options
        self.log_dir = Path(log_dir) if log_dir is not None else default_log_dir()
        self.log_path = self.log_dir / WORKER_LOG
        self._context = multiprocessing.get_context("spawn")
        self._lock = threading.Lock()
        self._cancelled_request = self._context.Value("q", 0, lock=False)
        self._request_id = 0
        self._process: BaseProcess | None = None
        self._conn: Connection | None = None
        self._log_offset = 0
        self._start()

    @classmethod
    def load(cls, path: str | Path, **options) -> "WorkerBackend":
        return cls(path, **options)

    # --- the worker's life ---

    def _start(self) -> None:
        try:
            self._log_offset = self.log_path.stat().st_size
        except OSError:
            self._log_offset = 0
        _start_resource_tracker()
        ours, theirs = self._context.Pipe()
        process = self._context.Process(target=_serve, name="chatapp-llama-worker", daemon=True,
                                        args=(theirs, self._cancelled_request, str(self.path), self.options, str(self.log_dir)))
        process.start()
        theirs.close()
        self._process, self._conn = process, ours
        kind, payload = self._receive()
        if kind == "error":
            self._stop()
            message = payload[1]
            raise GGUFFileError(message if message.startswith(str(self.path)) else f"{self.path}: {message}")
        ready = payload
        self.model_name = ready["model_name"]
        self.context_length = ready["context_length"]
        self.trained_context_length = ready["trained_context_length"] or self.context_length

    def _receive(self) -> Any:
        assert self._conn is not None  # a worker runs: _start made it
        try:
            return self._conn.recv()
        except (EOFError, OSError):
            raise self._crashed() from None

    def _send(self, message) -> None:
        assert self._conn is not None  # a worker runs: _request started one
        try:
            self._conn.send(message)
        except (OSError, ValueError):
            raise self._crashed() from None

    def _crashed(self) -> EngineCrashed:
        """The worker died: what it said last, and a clean slate for the next request."""
        assert self._process is not None  # it ran until now
        self._process.join(timeout=5)
        exitcode = self._process.exitcode
        why = last_message(self.log_path, self._log_offset)
        self._stop()
        return EngineCrashed(f"llama.cpp stopped ({_signal_name(exitcode)}) running {self.path.name}"
                             + (f": {why}" if why else "") + f" (log: {self.log_path})")

    def _stop(self) -> None:
        conn, process, self._conn, self._process = self._conn, self._process, None, None
        if conn is not None:
            conn.close()
        if process is not None:
            process.join(timeout=2)
            if process.is_alive():
                process.kill()
                process.join()

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.send(("close", 0, {}))
                except OSError:
                    pass
            self._stop()

    def __del__(self):
        try:
            self._stop()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    # --- requests ---

    def _request(self, operation: str, arguments: dict):
        """Send a request (a new worker if the last one died); the first answer."""
        if self._conn is None:
            self._start()
        self._request_id += 1
        self._send((operation, self._request_id, arguments))
        answer = self._receive()
        if answer[0] == "error":
            kind, message = answer[1]
            raise (ValueError if kind in USER_ERRORS else RuntimeError)(message)
        return answer

    def _call(self, operation: str, blocking: bool = True, **arguments):
        if not self._lock.acquire(blocking=blocking):
            raise EngineBusy("the engine is busy with a reply")
        try:
            return self._request(operation, arguments)[1]
        finally:
            self._lock.release()

    def cancel(self) -> None:
        self._cancelled_request.value = self._request_id

    def reset_cache(self) -> None:
        self._call("reset_cache")

    def default_reserve(self, params: SamplingParams) -> int:
        return min(params.max_tokens, self.context_length // 2)

    def prompt_ids(self, text: str) -> list[int]:
        return self._call("prompt_ids", text=text)

    def fit(self, messages: list[Message], reserve: int, continue_last: bool = False) -> FittedPrompt:
        """Raises EngineBusy rather than wait while a reply streams."""
        return self._call("fit", blocking=False, messages=messages, reserve=reserve, continue_last=continue_last)

    def chat(self, messages: list[Message], params: SamplingParams, reserve: int | None = None,
             inspect: Callable[[dict], None] | None = None, continue_last: bool = False) -> Iterator[Event]:
        return self._stream("chat", on_inspect=inspect, messages=messages, params=params, reserve=reserve,
                            inspect=inspect is not None, continue_last=continue_last)

    def complete(self, text: str, params: SamplingParams) -> Iterator[Event]:
        return self._stream("complete", text=text, params=params)

    def generate_ids(self, prompt: list[int], params: SamplingParams, stop_ids: set[int], notices: list[str] | None = None,
                     use_cache: bool = True) -> Iterator[Event]:
        return self._stream("generate_ids", prompt=prompt, params=params, stop_ids=stop_ids, notices=notices,
                            use_cache=use_cache)

    def _stream(self, operation: str, on_inspect: Callable[[dict], None] | None = None, **arguments) -> Iterator[Event]:
        """Start the request now (bad input raises here); the events as they come."""
        arguments["params"].validate()
        self._lock.acquire()
        started = time.perf_counter()
        try:
            self._request(operation, arguments)
        except BaseException:
            self._lock.release()
            raise
        return self._events(on_inspect, started)

    @staticmethod
    def _timed(finished: Finished, started: float, first_at: float | None, reported: int) -> Finished:
        if first_at is None:
            return finished
        now = time.perf_counter()
        decoded = reported - 1  # the first token's time is the prefill's
        rate = decoded / (now - first_at) if decoded > 0 and now > first_at else 0.0
        return replace(finished, time_to_first_token_s=first_at - started, tokens_per_second=rate)

    def _events(self, on_inspect, started: float) -> Iterator[Event]:
        """Pieces that arrive after cancel() are dropped: the worker may be a token or two ahead
        of the pipe, and the reply ends where the user stopped it. Timings are taken here, as
        the app receives the tokens, not in the worker."""
        request_id, ended, reported = self._request_id, False, 0
        first_at = None
        try:
            while True:
                kind, payload = self._receive()
                cancelled = self._cancelled_request.value >= request_id
                if kind == "event" and isinstance(payload, Finished):
                    if cancelled:
                        payload = replace(payload, reason="cancelled", completion_tokens=reported)
                    yield self._timed(payload, started, first_at, reported)
                elif kind == "event" and not cancelled:
                    if first_at is None and payload.token_ids:
                        first_at = time.perf_counter()
                    reported += len(payload.token_ids)
                    yield payload
                elif kind == "inspect" and not cancelled:
                    on_inspect(payload)
                elif kind == "end":
                    ended = True
                    return
                elif kind == "error":
                    ended = True
                    raise RuntimeError(payload[1])
        finally:
            if not ended and self._conn is not None:  # the caller stopped reading: stop the reply, read to its end
                self.cancel()
                try:
                    while self._receive()[0] not in ("end", "error"):
                        pass
                except EngineCrashed:
                    pass
            self._lock.release()
