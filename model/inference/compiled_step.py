"""The torch engine's decode step compiled with torch.compile, in a background thread.

The step (GPT.decode_step) has the same shapes at every position, so it compiles
once. Compiling takes tens of seconds on a CPU the first time (seconds once the
compile cache is warm), so it runs in a thread on a scratch KV cache of its own
while the engine decodes eagerly; between two tokens the engine then copies its
live cache into the scratch one and decodes with the compiled step on it from
then on (`CompiledStep.adopt`). On the CPU the step runs on a copy of the
model whose matrices are float16 when that loses nothing (a model folder's
weights are float16 on disk): with the step written as products and sums
(gpt.py, `matvec`), inductor reads them at half the bytes with float32
arithmetic, so the logits stay float32's. On CUDA the step runs in bfloat16 (the engine's
inference dtype) and is replayed as a CUDA graph (mode "reduce-overhead").

A compile that fails (no C compiler, an unsupported platform) leaves the engine
eager and says so in one line.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from model.errors import one_line

if TYPE_CHECKING:
    from model.network.gpt import GPT

INDUCTOR_CACHE_VARIABLE = "TORCHINDUCTOR_CACHE_DIR"
COMPILE_THREAD = "chatapp-compile"
BACKGROUND_NICENESS = 10
# Compiling is Python holding the GIL most of the time, and a decode step needs the GIL back after
# each of its small torch calls: replies decoded during a compile ran up to 30x slower. So the
# compile pauses while the engine decodes (a profile hook on its thread, at each function call),
# and, for when it runs anyway, a short switch interval hands the GIL back quickly.
YIELD_S = 0.25  # the compile pauses until this long after the last decoded token,
MOST_PAUSED_S = 1.0  # for at most this long at a time,
LEAST_RUN_S = 0.25  # then runs for at least this long: under constant decoding it still ends
SWITCH_INTERVAL_S = 0.0002  # the compiler's threads and gcc yield the CPU to decoding


class _ShortSwitchInterval:
    """sys.setswitchinterval is process-wide: the first compile running shortens it, the last one to end puts
    back what was there before the first (two compiles at once must not leave it short)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._saved = 0.0

    def __enter__(self) -> None:
        with self._lock:
            if self._users == 0:
                self._saved = sys.getswitchinterval()
                sys.setswitchinterval(SWITCH_INTERVAL_S)
            self._users += 1

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0:
                sys.setswitchinterval(self._saved)


short_switch_interval = _ShortSwitchInterval()


def use_compile_cache(folder: str | Path | None) -> None:
    """Keep inductor's compiled kernels in `folder` (made if absent), so a later start
    loads them instead of compiling; a folder the user chose with the variable wins."""
    if folder is not None and not os.environ.get(INDUCTOR_CACHE_VARIABLE):
        Path(folder).mkdir(parents=True, exist_ok=True)
        os.environ[INDUCTOR_CACHE_VARIABLE] = str(folder)


def compile_by_default(device: str) -> bool:
    """What --compile auto means: where the compiled step measured faster (README, Speed)."""
    return device in ("cuda", "cpu")


def compile_mode(device: str) -> str | None:
    """torch.compile's mode: CUDA graphs on CUDA (one launch per token), the default elsewhere."""
    return "reduce-overhead" if device == "cuda" else None


def half_weight_copy(model: GPT) -> GPT:
    """A copy of the model for the compiled step whose matrices (every Linear and the token
    embedding) are float16, if each is exactly float16 already; else an unchanged copy."""
    import copy

    import torch

    twin = copy.deepcopy(model)
    matrices = [m for m in twin.modules() if isinstance(m, torch.nn.Linear)] + [twin.token_embedding]
    if any(m.weight.dtype != torch.float32 or not torch.equal(m.weight.half().float(), m.weight) for m in matrices):
        return twin
    halves: dict[int, torch.nn.Parameter] = {}  # by the original's id: the tied LM head stays tied
    for module in matrices:
        weight = module.weight
        if id(weight) not in halves:
            halves[id(weight)] = torch.nn.Parameter(weight.detach().half(), requires_grad=False)
        module.weight = halves[id(weight)]
    return twin


def row_buckets(slots: int, device: str) -> list[int]:
    """The row counts a step of `slots` parallel slots is compiled for: the step runs on the cache's
    first rows, as many as the bucket that holds the highest decoding slot (a static step reads every
    row's whole cache: one reply on 8 slots would pay for 8). Powers of two below `slots`, then
    `slots`; on CUDA `slots` alone (its graphs are recorded per cache address)."""
    if device == "cuda":
        return [slots]
    sizes, size = [], 1
    while size < slots:
        sizes.append(size)
        size *= 2
    return sizes + [slots]


def first_rows(cache, rows: int) -> tuple[list, list]:
    """(keys, values) of the cache's first `rows` rows: views, so that a step writes into the cache."""
    return [t[:rows] for t in cache.keys], [t[:rows] for t in cache.values]


def compile_under_way() -> bool:
    """Whether a decode step is still being compiled in this process."""
    return any(thread.name == COMPILE_THREAD and thread.is_alive() for thread in threading.enumerate())


class CompiledStep:
    """A decode step being compiled in the background; `ready` once it is usable or has failed."""

    def __init__(self, model, device: str, warm_up_calls: int | None = None, slots: int | None = None):
        """`slots`: compile GPT.decode_slots on the first rows of a cache of that many parallel slots
        (model/inference/torch_slots.py), for each count of `row_buckets`, instead of the single reply's
        GPT.decode_step."""
        self.model = model
        self.device = device
        self.slots = slots
        self.row_buckets = row_buckets(slots, device) if slots else []
        self.cache = model.new_cache(batch=slots or 1)  # the scratch cache it compiles on; the live one after adopt()
        self.step: Callable[..., Any] | None = None  # the compiled GPT.decode_step, once ready
        self.error: str | None = None
        self.seconds: float | None = None
        self.warm_up_calls = warm_up_calls or (3 if device == "cuda" else 1)  # CUDA graphs record on a later call
        self.ready = threading.Event()
        self.decoding_until = 0.0  # see decoding()
        self._running_until = 0.0
        # not a daemon: Python waits for it at exit, as torch aborts the process ("terminate called
        # without an active exception") when it exits normally with a compile under way; the
        # chatapp command does not wait: it leaves with os._exit (chatapp/cli.py)
        self.thread = threading.Thread(target=self._compile, name=COMPILE_THREAD)
        self.thread.start()

    def wait(self, timeout: float | None = None) -> bool:
        return self.ready.wait(timeout)

    @property
    def state(self) -> str:
        """ "compiling" until ready, then "on", or "failed: ..." (the engine stays eager)."""
        if not self.ready.is_set():
            return "compiling"
        return "on" if self.step is not None else f"failed: {self.error}"

    def adopt(self, live_cache):
        """Switch over between two tokens: the scratch cache takes the live cache's contents
        and becomes the cache to decode on. Returns (step, cache)."""
        self.cache.copy_from(live_cache)
        return self.step, self.cache

    def decoding(self) -> None:
        """Called by the engine at each decoded token: the compile pauses meanwhile."""
        self.decoding_until = time.monotonic() + YIELD_S

    def _yield_to_decoding(self, frame, event, arg) -> None:
        now = time.monotonic()
        if now >= self.decoding_until or now < self._running_until:
            return
        paused_since = now
        while now < self.decoding_until:
            if now - paused_since > MOST_PAUSED_S:
                self._running_until = now + LEAST_RUN_S
                return
            time.sleep(0.02)
            now = time.monotonic()

    def _compile(self) -> None:
        started = time.perf_counter()
        try:
            with short_switch_interval:
                sys.setprofile(self._yield_to_decoding)  # this thread only
                self.step = self._compiled_step()
        except Exception as error:  # a compiler missing or failing: stay eager
            self.error = f"{type(error).__name__}: {one_line(error, 300)}"
        finally:
            sys.setprofile(None)
            self.seconds = time.perf_counter() - started
            self.ready.set()

    def _compiled_step(self) -> Callable:
        self._lower_priority()
        import torch
        import torch._inductor.config

        # no worker pool: a process may exit mid-compile, and decoding keeps a core
        torch._inductor.config.compile_threads = 1
        if self.device == "cuda":  # CUDA graphs need the cache at a fixed address
            for tensor in self.cache.keys + self.cache.values:
                torch._dynamo.mark_static_address(tensor)
        model = half_weight_copy(self.model) if self.device == "cpu" else self.model
        model.eval()
        device = self.cache.keys[0].device

        def zeros(rows: int, dtype=torch.long) -> torch.Tensor:
            return torch.zeros(rows, dtype=dtype, device=device)

        step: Callable[..., Any]
        examples: list[tuple]
        if self.slots is None:
            step = torch.compile(model.decode_step, fullgraph=True, dynamic=False, mode=compile_mode(self.device))
            examples = [(zeros(1).view(1, 1), zeros(1), self.cache.keys, self.cache.values)]
        else:  # a graph for each bucket (dynamic=False: one per shape), on the cache's first rows
            step = torch.compile(model.decode_slots, fullgraph=True, dynamic=False, mode=compile_mode(self.device))
            with torch.inference_mode():  # where the slots make their inputs: other tensors would recompile
                examples = [
                    (zeros(rows).view(rows, 1), zeros(rows), zeros(rows, torch.bool), *first_rows(self.cache, rows))
                    for rows in self.row_buckets
                ]
        with torch.inference_mode():
            for example in examples:
                for _ in range(self.warm_up_calls):
                    step(*example)
        return step

    @staticmethod
    def _lower_priority() -> None:
        try:
            # this thread only, on Linux
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICENESS)
        except (AttributeError, OSError):
            pass
