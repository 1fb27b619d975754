"""llama.cpp through llama-cpp-python's C bindings alone: a model, one context, a batch.

`import llama_cpp` runs the package's __init__, which imports its high-level API too
(llama_cpp.Llama, its chat formats, jinja2): about 60 ms of a cold start on top of the
bindings' 20 ms, for code chatapp never calls. `bindings()` imports llama_cpp.llama_cpp
(the ctypes declarations) with a stand-in package whose high-level names load on first
use, so `import llama_cpp` elsewhere in the process still finds all of them.

`LoadedLlama` is what chatapp used of llama_cpp.Llama, made with the same parameters
(Llama's own defaults, copied below), so replies do not change: load, eval a list of ids
at a position, the last logits, tokenize, detokenize, close. No numpy unless `logits_all`.
"""

from __future__ import annotations

import ctypes
import importlib
import importlib.util
import sys
import threading
import types
from pathlib import Path
from typing import Any

DEFAULT_BATCH = 512  # llama_cpp.Llama's n_batch and n_ubatch

_backend_lock = threading.Lock()
_backend_ready = False


class _LazyPackage(types.ModuleType):
    """`llama_cpp` with only its bindings imported: any other name runs the real package's
    __init__ (its high-level API) here, once, and is then found as usual."""

    def __getattr__(self, name: str) -> Any:
        if (name.startswith("__") and name not in ("__version__", "__all__")) or self.__dict__.get("_complete"):
            raise AttributeError(name)
        bindings_module = sys.modules.get("llama_cpp.llama_cpp")
        if bindings_module is not None and not name.startswith("_") and hasattr(bindings_module, name):
            return getattr(bindings_module, name)
        self._complete = True
        loader: Any = self.__spec__.loader if self.__spec__ is not None else None
        loader.exec_module(self)  # the package's own __init__, run here (also where the app is frozen)
        return getattr(self, name)


def bindings():
    """llama_cpp.llama_cpp (raises ImportError when llama-cpp-python is not installed)."""
    loaded = sys.modules.get("llama_cpp.llama_cpp")
    if loaded is not None:
        return loaded
    if "llama_cpp" not in sys.modules:
        spec = importlib.util.find_spec("llama_cpp")
        if spec is None or spec.origin is None:
            raise ImportError("No module named 'llama_cpp'")
        package = _LazyPackage("llama_cpp")
        package.__spec__, package.__file__ = spec, spec.origin
        package.__path__ = list(spec.submodule_search_locations or [])
        package.__package__ = "llama_cpp"
        sys.modules["llama_cpp"] = package
    return importlib.import_module("llama_cpp.llama_cpp")


def _init_backend(llama) -> None:
    global _backend_ready
    with _backend_lock:
        if not _backend_ready:
            llama.llama_backend_init()
            _backend_ready = True


def context_params(llama, n_ctx: int, n_threads: int, n_threads_batch: int, n_batch: int = DEFAULT_BATCH):
    """llama_cpp.Llama's context parameters for these sizes (its defaults set explicitly, as it does)."""
    params = llama.llama_context_default_params()
    params.n_ctx = n_ctx
    params.n_batch = min(n_ctx, n_batch)
    params.n_ubatch = min(params.n_batch, DEFAULT_BATCH)
    params.n_threads = n_threads
    params.n_threads_batch = n_threads_batch
    params.rope_scaling_type = llama.LLAMA_ROPE_SCALING_TYPE_UNSPECIFIED
    params.pooling_type = llama.LLAMA_POOLING_TYPE_UNSPECIFIED
    params.attention_type = llama.LLAMA_ATTENTION_TYPE_UNSPECIFIED
    params.rope_freq_base = 0.0
    params.rope_freq_scale = 0.0
    params.yarn_ext_factor = -1.0
    params.yarn_attn_factor = 1.0
    params.yarn_beta_fast = 32.0
    params.yarn_beta_slow = 1.0
    params.yarn_orig_ctx = 0
    params.embeddings = False
    params.offload_kqv = True
    params.flash_attn_type = llama.LLAMA_FLASH_ATTN_TYPE_DISABLED
    params.no_perf = False
    return params


class LoadedLlama:
    """A GGUF file loaded in llama.cpp with a context of `n_ctx` tokens (one sequence, id 0)."""

    def __init__(
        self,
        path: str | Path,
        *,
        n_ctx: int,
        n_threads: int,
        n_threads_batch: int,
        n_gpu_layers: int = 0,
        logits_all: bool = False,
    ):
        llama = self._llama = bindings()
        _init_backend(llama)
        self.model: Any = None
        self.ctx: Any = None
        self._batch: Any = None
        if not Path(path).exists():
            raise ValueError(f"Model path does not exist: {path}")
        model_params = llama.llama_model_default_params()
        model_params.n_gpu_layers = n_gpu_layers
        self.model = llama.llama_model_load_from_file(str(path).encode("utf-8"), model_params)
        if not self.model:
            self.model = None
            raise ValueError(f"Failed to load model from file: {path}")
        try:
            self.vocab = llama.llama_model_get_vocab(self.model)
            self.context_params = context_params(llama, n_ctx, n_threads, n_threads_batch)
            self.n_batch = self.context_params.n_batch
            self.n_threads, self.n_threads_batch = n_threads, n_threads_batch
            self.ctx = llama.llama_init_from_model(self.model, self.context_params)
            if not self.ctx:
                self.ctx = None
                raise ValueError("Failed to create llama_context")
            self.memory = llama.llama_get_memory(self.ctx)
            self._batch = llama.llama_batch_init(self.n_batch, 0, 1)
        except BaseException:
            self.close()
            raise
        self.n_tokens = 0  # positions 0..n_tokens-1 of sequence 0 hold what eval computed
        self.logits_all = logits_all
        self.scores = None  # logits_all: one row of logits per position evaluated
        if logits_all:
            import numpy as np

            self.scores = np.empty((n_ctx, self.n_vocab()), dtype=np.single)

    def n_vocab(self) -> int:
        return int(self._llama.llama_vocab_n_tokens(self.vocab))

    def token_bos(self) -> int:
        return int(self._llama.llama_vocab_bos(self.vocab))

    def token_eos(self) -> int:
        return int(self._llama.llama_vocab_eos(self.vocab))

    def reset(self) -> None:
        """The next eval starts at position 0 (what it overwrites is dropped then)."""
        self.n_tokens = 0

    def forget(self, start: int = 0) -> None:
        """Drop the KV cache from `start` on."""
        self._llama.llama_memory_seq_rm(self.memory, 0, start, -1)
        self.n_tokens = min(self.n_tokens, start)

    def eval(self, ids: list[int]) -> None:
        """Compute `ids` at positions n_tokens, n_tokens + 1, ... (in batches of n_batch); the last
        one's logits (every one's with logits_all) are then at hand."""
        llama, batch = self._llama, self._batch
        llama.llama_memory_seq_rm(self.memory, 0, self.n_tokens, -1)
        for begin in range(0, len(ids), self.n_batch):
            chunk = ids[begin : begin + self.n_batch]
            batch.n_tokens = len(chunk)
            for i, token in enumerate(chunk):
                batch.token[i] = token
                batch.pos[i] = self.n_tokens + i
                batch.seq_id[i][0] = 0
                batch.n_seq_id[i] = 1
                batch.logits[i] = self.logits_all
            batch.logits[len(chunk) - 1] = True
            code = llama.llama_decode(self.ctx, batch)
            if code != 0:
                raise RuntimeError(f"llama_decode returned {code}")
            if self.scores is not None:
                import numpy as np

                rows = np.ctypeslib.as_array(llama.llama_get_logits(self.ctx), shape=(len(chunk), self.n_vocab()))
                self.scores[self.n_tokens : self.n_tokens + len(chunk)] = rows
            self.n_tokens += len(chunk)

    def last_logits_pointer(self):
        return self._llama.llama_get_logits_ith(self.ctx, -1)

    def tokenize(self, text: bytes, add_bos: bool = True, special: bool = False) -> list[int]:
        from quant.llama_tokens import tokenize

        return tokenize(self.vocab, text, add_special=add_bos, parse_special=special)

    def detokenize(self, ids: list[int], special: bool = False) -> bytes:
        """As llama_cpp.Llama's: each token's piece, a leading space after BOS dropped."""
        llama, pieces = self._llama, []
        buffer = ctypes.create_string_buffer(256)
        for token in ids:
            n = llama.llama_token_to_piece(self.vocab, token, buffer, len(buffer), 0, special)
            if n < 0:
                buffer = ctypes.create_string_buffer(-n)
                n = llama.llama_token_to_piece(self.vocab, token, buffer, len(buffer), 0, special)
            pieces.append(buffer.raw[: max(n, 0)])
        output = b"".join(pieces)
        return output[1:] if ids and ids[0] == self.token_bos() and output[:1] == b" " else output

    def close(self) -> None:
        llama = self._llama
        batch, self._batch = self._batch, None
        ctx, self.ctx = self.ctx, None
        model, self.model = self.model, None
        if batch is not None:
            llama.llama_batch_free(batch)
        if ctx is not None:
            llama.llama_free(ctx)
        if model is not None:
            llama.llama_model_free(model)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - at interpreter exit the bindings may be gone
            pass
