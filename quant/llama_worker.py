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
within one token. The child's side is quant/worker_process.py; quant/worker_start.py
starts it, early when the command line names a GGUF file. The file is checked
once, here, while the child imports llama.cpp; the child trusts that check. No torch.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from model.inference.backend import EngineBusy, EngineCrashed, Event, Finished
from model.inference.sampling import SamplingParams
from model.text.chat_format import FittedPrompt, Message
from quant.gguf_check import GGUFFileError, GGUFInfo, check_gguf
from quant.llama_log import default_log_dir
from quant.worker_fork import ForkedProcess
from quant.worker_process import WORKER_LOG
from quant.worker_start import spawn_worker, take_spare

USER_ERRORS = {"ValueError", "GGUFFileError", "TemplateError", "SamplingError"}  # raised again as ValueError


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

    def __init__(self, path: str | Path, log_dir: str | Path | None = None, info: GGUFInfo | None = None, **options):
        """Starts the worker process at once, checks the file here while the worker imports
        llama.cpp, then has the worker load it. `info`: check_gguf's answer, when the caller has it."""
        self.path = Path(path).expanduser()
        self.options = options
        self.log_dir = Path(log_dir) if log_dir is not None else default_log_dir()
        self.log_path = self.log_dir / WORKER_LOG
        self._lock = threading.Lock()
        self._cancelled_request: Any = None  # the worker's shared cancel flag (quant.worker_start)
        self._request_id = 0
        self._process: BaseProcess | ForkedProcess | None = None
        self._conn: Connection | None = None
        self._log_offset = 0
        loading = self._spawn()
        if loading is not None:  # the command line checked the file and has the worker loading it
            self.info = loading
        else:
            try:
                self.info = info if info is not None else check_gguf(self.path)  # once: the worker trusts it
            except BaseException:
                self._stop(kill=True)
                raise
        self.ours = self.info.chatapp
        self._load(send=loading is None)
        if loading is not None and self._spare_options != self.options:  # loaded with other cache limits
            from quant.kv_cache import DEFAULT_DISK_BYTES, DEFAULT_MEMORY_BYTES

            memory_mb = self.options.get("state_cache_mb", DEFAULT_MEMORY_BYTES // 2**20)
            self.set_cache_limits(memory_mb, self.options.get("state_disk_mb", DEFAULT_DISK_BYTES // 2**20))

    @classmethod
    def load(cls, path: str | Path, **options) -> WorkerBackend:
        return cls(path, **options)

    # --- the worker's life ---

    def _start(self) -> None:
        self._spawn(spare=False)
        self._load()

    def _spawn(self, spare: bool = True) -> GGUFInfo | None:
        """A worker: the one the command line started (quant.worker_start), else a new one. The
        GGUFInfo of the file it already loads, when the command line had it load this one."""
        try:
            self._log_offset = self.log_path.stat().st_size
        except OSError:
            self._log_offset = 0
        worker = take_spare(str(self.log_dir), str(self.path), self.options) if spare else None
        worker = worker or spawn_worker(str(self.log_dir))
        self._process, self._conn, self._cancelled_request = worker.process, worker.conn, worker.cancelled_request
        self._spare_options = worker.loading[2] if worker.loading is not None else self.options
        return worker.loading[1] if worker.loading is not None else None

    def _load(self, send: bool = True) -> None:
        if send:
            self._send(("load", str(self.path), self.info, self.options))
        kind, payload = self._receive()
        if kind == "error":
            self._stop()
            message = payload[1]
            raise GGUFFileError(message if message.startswith(str(self.path)) else f"{self.path}: {message}")
        ready = payload
        self.model_name = ready["model_name"]
        self.context_length = ready["context_length"]
        self.trained_context_length = ready["trained_context_length"] or self.context_length
        self.threads: tuple[int, int] | None = ready.get("threads")  # (decode, prompt) in the worker

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
        return EngineCrashed(
            f"llama.cpp stopped ({_signal_name(exitcode)}) running {self.path.name}"
            + (f": {why}" if why else "")
            + f" (log: {self.log_path})"
        )

    def _stop(self, kill: bool = False) -> None:
        conn, process, self._conn, self._process = self._conn, self._process, None, None
        if conn is not None:
            conn.close()
        if process is not None:
            if kill:
                process.kill()
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
            self._stop(kill=True)  # nothing in the worker needs a goodbye: the app leaves at once
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

    def set_cache_limits(self, memory_mb: int, disk_mb: int) -> None:
        """The saved states' limits (LlamaEngine.set_cache_limits), kept for a worker started again.
        Raises EngineBusy rather than wait while a reply streams."""
        self.options = {**self.options, "state_cache_mb": memory_mb, "state_disk_mb": disk_mb}
        self._call("set_cache_limits", blocking=False, memory_mb=memory_mb, disk_mb=disk_mb)

    def default_reserve(self, params: SamplingParams) -> int:
        return min(params.max_tokens, self.context_length // 2)

    def prompt_ids(self, text: str) -> list[int]:
        return self._call("prompt_ids", text=text)

    def fit(
        self,
        messages: list[Message],
        reserve: int,
        continue_last: bool = False,
        params: SamplingParams | None = None,
    ) -> FittedPrompt:
        """Raises EngineBusy rather than wait while a reply streams."""
        return self._call(
            "fit", blocking=False, messages=messages, reserve=reserve, continue_last=continue_last, params=params
        )

    def chat(
        self,
        messages: list[Message],
        params: SamplingParams,
        reserve: int | None = None,
        inspect: Callable[[dict], None] | None = None,
        continue_last: bool = False,
    ) -> Iterator[Event]:
        return self._stream(
            "chat",
            on_inspect=inspect,
            messages=messages,
            params=params,
            reserve=reserve,
            inspect=inspect is not None,
            continue_last=continue_last,
        )

    def complete(self, text: str, params: SamplingParams) -> Iterator[Event]:
        return self._stream("complete", text=text, params=params)

    def generate_ids(
        self,
        prompt: list[int],
        params: SamplingParams,
        stop_ids: set[int],
        notices: list[str] | None = None,
        use_cache: bool = True,
    ) -> Iterator[Event]:
        return self._stream(
            "generate_ids", prompt=prompt, params=params, stop_ids=stop_ids, notices=notices, use_cache=use_cache
        )

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
