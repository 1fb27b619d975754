"""Opening a backend for a model: the torch engine for model folders, llama.cpp
for GGUF files (in a worker process, so a native abort cannot take the app
down; `in_process=True` for measuring what that costs). Imports are lazy so a
GGUF model never imports torch, and so the command line reads BACKEND_CHOICES
at start for the price of this file alone."""

from __future__ import annotations

TYPE_CHECKING = False  # typing's flag without importing typing at start; type checkers take it as True
if TYPE_CHECKING:
    from chatapp.model_registry import ModelRef

BACKEND_CHOICES = ("auto", "torch", "llama.cpp")  # --backend, and [model] backend in the settings file
import os

COMPILE_CHOICES = ("auto", "on", "off")  # --compile: the torch engine's decode step (model/inference/compiled_step.py)

COMPILE_VARIABLE = "CHATAPP_COMPILE"


def default_compile() -> str:
    """--compile's default: $CHATAPP_COMPILE (auto, on or off) when set, else auto."""
    return os.environ.get(COMPILE_VARIABLE) or "auto"


def open_backend(ref: ModelRef, backend: str = "auto", device: str = "auto", in_process: bool = False,
                 context: int | None = None, compile: str = "off"):
    if backend not in BACKEND_CHOICES:
        raise ValueError(f"--backend must be one of {', '.join(BACKEND_CHOICES)}, not {backend!r}")
    if backend == "auto":
        backend = "torch" if ref.kind == "folder" else "llama.cpp"
    if backend == "torch":
        if ref.kind != "folder":
            raise ValueError(f"{ref.path}: the torch backend needs a model folder; GGUF files run with --backend llama.cpp")
        try:
            from model.inference.torch_engine import TorchEngine
        except ImportError as error:
            raise ValueError(f"the torch backend needs PyTorch, which this install lacks ({error}); use a GGUF model") from None
        if compile not in COMPILE_CHOICES:
            raise ValueError(f"--compile must be one of {', '.join(COMPILE_CHOICES)}, not {compile!r}")
        from chatapp.paths import compile_cache_dir

        return TorchEngine.load(ref.path, device=device, compile=compile, compile_cache=compile_cache_dir())
    if ref.kind != "gguf":
        raise ValueError(f"{ref.path}: llama.cpp needs a GGUF file; make one with `chatapp export {ref.name}`")
    if context is not None and context < 16:
        raise ValueError(f"--context must be at least 16 tokens, got {context}")
    options = {"max_context": context} if context else {}
    if in_process:
        from quant.llama_backend import LlamaEngine

        return LlamaEngine.load(ref.path, **options)
    from quant.llama_worker import WorkerBackend

    return WorkerBackend.load(ref.path, **options)
