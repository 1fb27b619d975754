"""From a model the user named to a running backend, the one way the TUI, run,
serve and bench open one: open_model takes a spec (a path, a name, nothing for
the default, or a model on an OpenAI-compatible server); open_backend a
ModelRef. Model folders run on the torch engine, GGUF files on llama.cpp (in a
worker process, so a native abort cannot take the app down; `in_process=True`
for measuring what that costs). Imports are lazy so a GGUF model never imports
torch, and so the command line reads BACKEND_CHOICES at start for the price of
this file alone."""

from __future__ import annotations

import os
from dataclasses import dataclass

TYPE_CHECKING = False  # typing's flag without importing typing at start; type checkers take it as True
if TYPE_CHECKING:
    from chatapp.models.registry import ModelRef
    from model.inference.backend import Backend

BACKEND_CHOICES = ("auto", "torch", "llama.cpp")  # --backend, and [model] backend in the settings file

COMPILE_CHOICES = ("auto", "on", "off")  # --compile: the torch engine's decode step (model/inference/compiled_step.py)

COMPILE_VARIABLE = "CHATAPP_COMPILE"


def default_compile() -> str:
    """--compile's default: $CHATAPP_COMPILE (auto, on or off) when set, else auto."""
    return os.environ.get(COMPILE_VARIABLE) or "auto"


@dataclass(frozen=True)
class Threads:
    """CPU threads for an engine: `decode` generates tokens, `batch` reads prompts (llama.cpp's n_threads and
    n_threads_batch; torch uses `decode`). None: model.inference.threads picks by the model's size."""

    decode: int | None = None
    batch: int | None = None

    def validate(self) -> Threads:
        for flag, value in (("--threads", self.decode), ("--threads-batch", self.batch)):
            if value is not None and not (isinstance(value, int) and 1 <= value <= MAX_THREADS):
                raise ValueError(f"{flag} must be a whole number from 1 to {MAX_THREADS}, got {value!r}")
        return self


MAX_THREADS = 1024

# What open_model uses when its caller names no threads: the command line's --threads or the settings
# file's, set once by the command (the TUI opens its models without knowing either).
_session_threads = Threads()


def set_session_threads(threads: Threads) -> None:
    global _session_threads
    _session_threads = threads.validate()


def session_threads() -> Threads:
    """What open_model uses when its caller names no threads (set_session_threads)."""
    return _session_threads


MAX_CACHE_MB = 1024 * 1024  # a terabyte: a bound on a typing slip, not on a machine


@dataclass(frozen=True)
class CacheLimits:
    """How much recent conversations' computed prompts may keep, so that coming back to one computes only
    its new tokens ([cache] in settings.toml): `memory_mb` in memory (both engines), `disk_mb` on disk
    under the user cache dir (llama.cpp's saved states); 0 keeps none there. The defaults are
    quant.kv_cache's (a test holds them equal; quant is not imported here at start)."""

    memory_mb: int = 512
    disk_mb: int = 2048

    def validate(self) -> CacheLimits:
        for key, value in (("memory_mb", self.memory_mb), ("disk_mb", self.disk_mb)):
            if isinstance(value, bool) or not (isinstance(value, int) and 0 <= value <= MAX_CACHE_MB):
                raise ValueError(f"cache {key} must be a whole number of MB from 0 (none) to {MAX_CACHE_MB}")
        return self


_session_cache = CacheLimits()


def set_session_cache(limits: CacheLimits) -> None:
    """The cache limits open_model gives the models it opens from now on (the settings file's [cache])."""
    global _session_cache
    _session_cache = limits.validate()


def session_cache() -> CacheLimits:
    return _session_cache


def apply_cache_limits(backend: Backend, limits: CacheLimits) -> bool:
    """Give an open local engine new cache limits (what it keeps beyond them goes, oldest first); False
    when it cannot take them now (a reply is streaming). A backend that keeps no prompts (a server) has
    nothing to change."""
    from model.inference.backend import EngineBusy

    prompt_cache = getattr(backend, "prompt_cache", None)  # the torch engine's (model/inference/prompt_cache.py)
    if prompt_cache is not None:
        prompt_cache.resize(limits.memory_mb * 2**20)
        return True
    set_limits = getattr(backend, "set_cache_limits", None)  # llama.cpp's, in its worker or in process
    if set_limits is None:
        return True
    try:
        set_limits(limits.memory_mb, limits.disk_mb)
    except EngineBusy:
        return False
    return True


def llama_options(context: int | None, threads: Threads, cache: CacheLimits | None = None) -> dict:
    """What the llama.cpp worker is told to load a file with (the command line's early start sends the same)."""
    from chatapp.paths import cache_dir

    cache = cache or _session_cache
    options: dict[str, int | str] = {"max_context": context} if context else {}
    options["state_cache_dir"] = str(cache_dir() / "kv-states")  # a conversation's prompt computed once
    if cache.memory_mb != CacheLimits.memory_mb:  # else the engine's default, the same
        options["state_cache_mb"] = cache.memory_mb
    if cache.disk_mb != CacheLimits.disk_mb:
        options["state_disk_mb"] = cache.disk_mb
    if threads.decode is not None:
        options["n_threads"] = threads.decode
    if threads.batch is not None:
        options["n_threads_batch"] = threads.batch
    return options


def start_spare_worker(spec: str | None = None) -> None:
    """A llama.cpp worker started now, loading nothing, for the next GGUF file opened: the one `spec` names
    by path, or (without spec) whichever comes next, such as an F4 switch in the TUI. It imports llama.cpp
    while the app goes on; WorkerBackend takes it (quant.worker_start: at most one waits). Started by
    forking while the process has one thread, else as a fresh interpreter. Nothing without llama-cpp-python,
    or when spec is not a GGUF file."""
    import importlib.util

    if spec is not None and not (spec.lower().endswith(".gguf") and os.path.isfile(os.path.expanduser(spec))):
        return
    if importlib.util.find_spec("llama_cpp") is None:
        return
    from quant.llama_log import default_log_dir
    from quant.worker_start import start_spare

    try:
        start_spare(str(default_log_dir()))
    except Exception:  # noqa: BLE001 - only a head start: the backend starts a worker itself and says what failed
        pass


def start_spare_loading(spec: str, context: int | None = None) -> None:
    """Have the waiting spare worker (start_spare_worker) load the GGUF file `spec` names by path, as
    open_model will ask for it (the session's threads and cache limits), so that the load runs while the
    app starts; the file is checked here first. open_model's WorkerBackend then takes that worker."""
    if not (spec.lower().endswith(".gguf") and os.path.isfile(os.path.expanduser(spec))):
        return
    if context is not None and context < 16:  # open_backend refuses it
        return
    from quant.llama_log import default_log_dir
    from quant.worker_start import start_spare

    path = os.path.expanduser(spec)
    try:
        start_spare(str(default_log_dir()), path, llama_options(context, _session_threads, _session_cache))
    except Exception:  # noqa: BLE001 - only a head start: the backend starts a worker itself and says what failed
        pass


@dataclass(frozen=True)
class OpenedModel:
    backend: Backend
    name: str  # what to call it: its name in `chatapp models`, or the server's model id


def open_model(
    spec: str | None,
    backend: str = "auto",
    device: str = "auto",
    *,
    context: int | None = None,
    compile: str | None = None,
    api_key: str | None = None,
    endpoint: str | None = None,
    in_process: bool = False,
    threads: Threads | None = None,
) -> OpenedModel:
    """The model `spec` names, running. With `endpoint` (a server's URL), or for a spec made by
    chatapp.serving.endpoint.endpoint_spec, the model is the server's (spec is its model id)."""
    from chatapp.serving.endpoint import parse_endpoint_spec

    on_server = (endpoint, spec) if endpoint else parse_endpoint_spec(spec)
    if on_server is not None:
        from chatapp.serving.api_key import api_key as key_or_environment
        from chatapp.serving.endpoint import EndpointBackend

        url, model = on_server
        remote = EndpointBackend(url, api_key=key_or_environment(api_key), model=model, context_length=context)
        return OpenedModel(remote, remote.model_name)
    from chatapp.models.resolve import resolve_model

    ref = resolve_model(spec or None)
    opened = open_backend(
        ref,
        backend,
        device,
        in_process=in_process,
        context=context,
        compile=compile or default_compile(),
        threads=threads if threads is not None else _session_threads,
        cache=_session_cache,
    )
    return OpenedModel(opened, ref.name)


def open_backend(
    ref: ModelRef,
    backend: str = "auto",
    device: str = "auto",
    in_process: bool = False,
    context: int | None = None,
    compile: str = "off",
    threads: Threads | None = None,
    cache: CacheLimits | None = None,
) -> Backend:
    """`cache`: what recent prompts may keep (None: the session's, set_session_cache)."""
    threads = (threads or Threads()).validate()
    if backend not in BACKEND_CHOICES:
        raise ValueError(f"--backend must be one of {', '.join(BACKEND_CHOICES)}, not {backend!r}")
    if backend == "auto":
        backend = "torch" if ref.kind == "folder" else "llama.cpp"
    if backend == "torch":
        if ref.kind != "folder":
            raise ValueError(
                f"{ref.path}: the torch backend needs a model folder; GGUF files run with --backend llama.cpp"
            )
        try:
            from model.inference.torch_engine import TorchEngine
        except ImportError:
            from chatapp.models.registry import torch_missing

            raise ValueError(torch_missing(f"running the model folder {ref.path}")) from None
        if compile not in COMPILE_CHOICES:
            raise ValueError(f"--compile must be one of {', '.join(COMPILE_CHOICES)}, not {compile!r}")
        from chatapp.paths import compile_cache_dir

        engine = TorchEngine.load(
            ref.path,
            device=device,
            compile=compile,
            compile_cache=compile_cache_dir(),
            threads=threads.decode,
            threads_batch=threads.batch,
        )
        apply_cache_limits(engine, cache or _session_cache)
        return engine
    if ref.kind != "gguf":
        raise ValueError(f"{ref.path}: llama.cpp needs a GGUF file; make one with `chatapp export {ref.name}`")
    if context is not None and context < 16:
        raise ValueError(f"--context must be at least 16 tokens, got {context}")
    options = llama_options(context, threads, cache)
    if in_process:
        from quant.llama_engine import LlamaEngine

        return LlamaEngine.load(ref.path, **options)
    from quant.llama_worker import WorkerBackend

    return WorkerBackend.load(ref.path, **options)
