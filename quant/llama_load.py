"""Opening a checked GGUF file in llama.cpp: the one place chatapp loads a model there.

The engine (llama_engine.py), the parallel slots (slot_engine.py) and the validation loss
(gguf_validation_loss.py) all load through `load_llama`: llama.cpp's log goes to a file,
the threads are sized to the file, every layer goes to a GPU when there is one. The model
is a quant.llama_native.LoadedLlama: llama-cpp-python's bindings only, never its
high-level Llama (whose import costs a cold start 60 ms, and which compiles every chat
template in the file). A missing llama-cpp-python or a file llama.cpp refuses is a
GGUFFileError (one line).
"""

from __future__ import annotations

import threading
from pathlib import Path

from model.errors import one_line
from model.inference.threads import default_threads
from quant.gguf_check import GGUFFileError, GGUFInfo

FOREIGN_MAX_CONTEXT = 4096  # the engine sizes a foreign model's KV cache for at most this many tokens by default


def context_for(info: GGUFInfo, foreign_cap: int) -> int:
    """The KV cache's size in tokens: our own files get the context they were trained on; a
    foreign file its own, at most foreign_cap (a cache for 128k tokens would not fit in memory)."""
    if info.chatapp:
        assert info.context_length is not None  # check_gguf: a chatapp file is gpt2, its context_length checked
        return info.context_length
    return min(info.context_length or foreign_cap, foreign_cap)


def load_llama(
    info: GGUFInfo,
    context: int,
    *,
    purpose: str,
    logits_all: bool = False,
    n_threads: int | None = None,
    n_threads_batch: int | None = None,
    n_gpu_layers: int | None = None,
    log_dir: str | Path | None = None,
):
    """(LoadedLlama, the log file's path) for a file check_gguf passed (`info`), with a KV
    cache of `context` tokens. `purpose` names what needs llama.cpp in the error when it is missing."""
    from quant.llama_native import LoadedLlama, bindings

    try:
        llama = bindings()
    except ImportError as error:
        raise GGUFFileError(f"{purpose} needs llama-cpp-python, which this install lacks ({error})") from None
    from quant.llama_log import route_logs

    log_path = route_logs(log_dir)
    decode_threads, batch_threads = default_threads(info.size_bytes)
    if n_gpu_layers is None:
        n_gpu_layers = -1 if llama.llama_supports_gpu_offload() else 0
    try:
        llm = LoadedLlama(
            info.path,
            n_ctx=context,
            n_threads=n_threads or decode_threads,
            n_threads_batch=n_threads_batch or n_threads or batch_threads,
            n_gpu_layers=n_gpu_layers,
            logits_all=logits_all,
        )
    except (ValueError, RuntimeError, OSError) as error:
        where = f" (details in {log_path})" if log_path else ""
        reason = one_line(error)
        raise GGUFFileError(f"{info.path}: llama.cpp could not load it: {reason}{where}") from None
    return llm, log_path


class BackgroundLoad:
    """load_llama for the engine, in a thread: llama.cpp reads the file and builds its context without
    holding the GIL, so the caller imports and builds the rest of the engine meanwhile (the worker
    starts one before it imports the engine's modules). result() waits, and raises what load_llama raised."""

    def __init__(
        self,
        info: GGUFInfo,
        *,
        max_context: int = FOREIGN_MAX_CONTEXT,
        n_threads: int | None = None,
        n_threads_batch: int | None = None,
        n_gpu_layers: int | None = None,
        log_dir: str | Path | None = None,
    ):
        self.context = context_for(info, max_context)
        self._loaded: tuple | None = None
        self._error: BaseException | None = None
        arguments = dict(
            n_threads=n_threads, n_threads_batch=n_threads_batch, n_gpu_layers=n_gpu_layers, log_dir=log_dir
        )
        self._thread = threading.Thread(target=self._load, args=(info, arguments), name="llama-load", daemon=True)
        self._thread.start()

    def _load(self, info: GGUFInfo, arguments: dict) -> None:
        try:
            self._loaded = load_llama(info, self.context, purpose="the llama.cpp backend", **arguments)
        except BaseException as error:  # noqa: BLE001 - handed to result()'s caller
            self._error = error

    def result(self):
        """(LoadedLlama, the log file's path), once loaded."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._loaded is not None  # the thread ended without an error: it loaded
        return self._loaded
