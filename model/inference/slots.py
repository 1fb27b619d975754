"""Many replies at once on one model: parallel slots with continuous batching, for either engine.

A model's side (`SlotModel`: quant/llama_slots.py on one llama.cpp context, or
model/inference/torch_slots.py on our GPT) holds N sequences, a slot each, with its own part of
the KV cache, and runs one step: a list of (token, position, sequence, wants logits) entries.
The scheduler here, in a thread of its own, builds each step: the next token of every slot that
is decoding and a chunk of at most `prefill_chunk` prompt tokens of every slot still reading its
prompt (so a long prompt never stalls the others' tokens), then samples each slot's next token
from its own logits row with the engine core's sampler and that request's own parameters and
seed. A request that arrives while others run takes a free slot at the next step; one that
ends, is cancelled or fails frees its slot at once. Whoever reads a reply never slows the
scheduler: events go into the request's queue, at most one per token of its budget.

ReplyStream (model/inference/reply_stream.py) turns each slot's tokens into text and its Finished,
exactly as for a single reply; its own `run()` loop pulls logits synchronously, so the step below
does the same work one token at a time: sample, stop token, push, budget or stop string, cancel.

A free slot keeps what its last reply left in its sequence: a new request goes to the free slot
whose cached tokens share the longest prefix with its prompt (a conversation's next turn finds its
earlier turns computed), and the rest of that sequence is dropped. What would be dropped is first
saved in the slots' prompt cache (model/inference/prompt_cache.py, bounded in bytes, as the single
engine's): a request whose prompt shares more with a saved sequence than with its slot has that
sequence's KV restored into its slot and computes only the rest, whichever slot it ran on before
(llama-server's --cache-ram does the same). The scheduler warms the model up with one step at start, so
the first request is not the one that pays for llama.cpp's or torch's first-call setup.

`SlotsMixin` is the engine's side, shared by both engines' slot engines: prompts are prepared one
at a time (under a lock: the prompt format's template variables are set per reply) and each
reply is handed to the scheduler.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import numpy as np

from model.inference.backend import Event
from model.inference.engine_core import REPETITION_WINDOW, repetition_history, reply_rng
from model.inference.prompt_cache import PromptCache
from model.inference.reply_stream import ReplyStream, common_prefix_length
from model.inference.sampling import SamplingParams, sample_next
from model.inference.threads import available_cores

DEFAULT_PREFILL_CHUNK = 256  # prompt tokens one slot may add to a step
DEFAULT_SLOT_CACHE_MB = 512  # saved sequences of the slots' prompt cache (the llama engine's default too)
MAX_SLOTS = 64  # llama.cpp's LLAMA_MAX_SEQ (more would only queue in one batch on torch too)
IDLE_POLL_S = 0.5  # how often an idle scheduler looks whether it is being closed
_END = object()  # the last item of a request's queue


class SlotMemoryError(ValueError):
    """N slots whose KV cache does not fit in this machine's memory (one line)."""


def available_memory_bytes() -> int | None:
    """Memory the system can give without swapping: MemAvailable on Linux, free pages elsewhere."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def gigabytes(size: int) -> str:
    return f"{size / 1e9:.1f} GB" if size >= 1e8 else f"{size / 1e6:.0f} MB"


def check_slot_count(slots: int) -> None:
    if not (isinstance(slots, int) and 1 <= slots <= MAX_SLOTS):
        raise ValueError(f"--parallel must be a whole number from 1 to {MAX_SLOTS}, got {slots!r}")


def check_slot_memory(needed: int, slots: int, context: int, memory_available: int | None) -> None:
    """SlotMemoryError when `needed` bytes of KV cache do not fit (default: what the system has now)."""
    available = memory_available if memory_available is not None else available_memory_bytes()
    if available is not None and needed > available:
        raise SlotMemoryError(
            f"--parallel {slots} needs {gigabytes(needed)} for the KV cache ({slots} slots x "
            f"{context:,} tokens) and {gigabytes(available)} of memory is available: lower --parallel or --context"
        )


class BatchEntry(NamedTuple):
    token: int
    position: int
    seq_id: int
    wants_logits: bool


class SlotModel(Protocol):
    """A model's side of the slots: N sequences of `slot_context` positions each."""

    n_vocab: int

    def decode(self, entries: list[BatchEntry]) -> dict[int, np.ndarray]:
        """Run one step; the logits of each entry that wants them, by its index in `entries`."""
        ...

    def forget(self, seq_id: int, start: int) -> bool:
        """Drop sequence `seq_id` from position `start` on; False when it cannot cut there."""
        ...

    def save(self, seq_id: int, length: int, max_bytes: int) -> tuple[Any, int] | None:
        """(a copy of sequence `seq_id`'s first `length` positions, its size in bytes); None when it
        would be larger than `max_bytes` or cannot be copied."""
        ...

    def restore(self, seq_id: int, saved: Any) -> bool:
        """Sequence `seq_id` holds what `saved` (from save) held, and nothing else; False (the sequence
        emptied) when the model refuses it."""
        ...

    def close(self) -> None: ...


@dataclass
class SlotRequest:
    """One reply to make: what the engine core prepared (prompt ids fitted, stop ids merged,
    notices; the stop strings and thinking split are the ReplyStream's), and where its events go."""

    prompt: list[int]
    params: SamplingParams
    stop_ids: set[int]
    notices: list[str]
    reply: ReplyStream
    events: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    on_finish: Any = None  # called with the ReplyStream once the reply ended (the engine remembers its ids)

    def __post_init__(self) -> None:
        self.rng = reply_rng(self.params)
        self.prompt_tail = self.prompt[-REPETITION_WINDOW:]

    def next_token(self, logits: np.ndarray) -> int:
        """The engine core's draw, with this request's parameters and generator."""
        return sample_next(logits, self.params, repetition_history(self.prompt_tail, self.reply.generated), self.rng)


class _Handed:
    """A request's events handed to a callback as the scheduler makes them (SlotReply.stream_to)."""

    def __init__(self, push: Callable[[Any], None]):
        self.push = push

    def put(self, item: Any) -> None:
        self.push(None if item is _END else item)


class SlotReply:
    """The events of one request, as an iterator (what Backend.chat returns), with its own cancel().
    The request reaches the scheduler on the first next(), as the engine core starts a reply lazily;
    or on stream_to(), which hands the events over instead."""

    def __init__(self, scheduler: SlotScheduler, request: SlotRequest):
        self.scheduler, self.request = scheduler, request
        self.submitted = False

    def __iter__(self) -> Iterator[Event]:
        return self

    def __next__(self) -> Event:
        if not self.submitted:
            self.submitted = True
            self.scheduler.submit(self.request)
        item = self.request.events.get()
        if item is _END:
            self.request.events.put(_END)  # later next() calls end too
            raise StopIteration
        if isinstance(item, BaseException):
            self.request.events.put(_END)
            raise item
        return item

    def stream_to(self, push: Callable[[Any], None]) -> None:
        """Start the reply and call push(item) from the scheduler's thread for each of its events, an
        exception if it fails, then None; instead of iterating (a server's event loop reads them with no
        thread of its own in between)."""
        assert not self.submitted, "a reply is either iterated or streamed"
        self.submitted = True
        self.request.events = _Handed(push)  # type: ignore[assignment]
        self.scheduler.submit(self.request)

    def cancel(self) -> None:
        """Stop this reply: its slot is freed at the next step (at most one more token)."""
        self.request.cancelled.set()


@dataclass
class Slot:
    seq_id: int
    cached: list[int] = field(default_factory=list)  # the tokens in this sequence's KV cache, by position
    request: SlotRequest | None = None
    to_read: list[int] = field(default_factory=list)  # prompt tokens (or the last sampled one) not yet decoded
    prefilled: int = 0
    row: int = -1  # this step: the batch index whose logits are this slot's, -1 when none


class SlotScheduler:
    """N slots of `slot_context` tokens each on `model` (a SlotModel). `format_lock`: held while a
    reply finishes (ReplyStream.finish may tell the prompt format the reply as written, while another
    thread fits a prompt with it)."""

    def __init__(
        self,
        model: SlotModel,
        slots: int,
        slot_context: int,
        prefill_chunk: int = DEFAULT_PREFILL_CHUNK,
        format_lock: Any = None,
        cache_mb: int = DEFAULT_SLOT_CACHE_MB,
    ):
        self.model = model
        self.saved: PromptCache[tuple[tuple[int, ...], Any]] = PromptCache(cache_mb * 2**20)
        self.format_lock = format_lock if format_lock is not None else threading.Lock()
        self.slot_context, self.prefill_chunk = slot_context, prefill_chunk
        self.n_vocab = model.n_vocab
        self.batch_size = prefill_chunk + slots  # every slot's token, and one chunk of prompt beside them
        self.entries: list[BatchEntry] = []
        self.slots = [Slot(seq_id) for seq_id in range(slots)]
        # the slots' draws run side by side: over a 262,144-token vocabulary one takes milliseconds,
        # mostly in numpy, which lets go of the GIL; each request has its own generator, so the
        # tokens do not depend on the order the draws finish in
        self.samplers = ThreadPoolExecutor(max_workers=min(slots, available_cores()), thread_name_prefix="slot-draw")
        self.waiting: queue.SimpleQueue = queue.SimpleQueue()
        self.closing = threading.Event()
        self.closed = False
        self._warm_up()
        self.thread = threading.Thread(target=self._run, name="slots", daemon=True)
        self.thread.start()

    # --- from other threads ---

    def submit(self, request: SlotRequest) -> None:
        if self.closing.is_set():
            self._end(request, RuntimeError("the engine is closed"))
            return
        self.waiting.put(request)

    def cancel_all(self) -> None:
        for slot in self.slots:
            if slot.request is not None:
                slot.request.cancelled.set()

    @property
    def busy_slots(self) -> int:
        return sum(slot.request is not None for slot in self.slots)

    def close(self) -> None:
        self.closing.set()
        self.thread.join()
        self.samplers.shutdown()
        self.model.close()
        self.closed = True

    # --- the scheduler thread ---

    def _run(self) -> None:
        while not self.closing.is_set():
            try:
                self._admit(block=not any(slot.request for slot in self.slots))
                self._step()
            except Exception as error:  # noqa: BLE001 - every running reply ends with it; the slots go on
                self._fail_all(error)
        self._fail_all(RuntimeError("the engine was closed"))
        while not self.waiting.empty():
            self._end(self.waiting.get(), RuntimeError("the engine was closed"))

    def _admit(self, block: bool) -> None:
        """Waiting requests into free slots (waiting for one when nothing runs)."""
        while True:
            free = [slot for slot in self.slots if slot.request is None]
            if not free:
                return
            try:
                request = self.waiting.get(timeout=IDLE_POLL_S) if block else self.waiting.get_nowait()
            except queue.Empty:
                return
            block = False
            if request.cancelled.is_set():  # cancelled before it started: it never runs
                request.reply.reason = "cancelled"
                self._finish(request, 0)
                continue
            self._place(request, max(free, key=lambda slot: common_prefix_length(slot.cached, request.prompt)))

    def _warm_up(self) -> None:
        """One step of one token and a draw, forgotten: the model's first-call setup (and numpy's random
        module, loaded by the first draw) is not a request's wait."""
        logits = self.model.decode([BatchEntry(0, 0, 0, True)])
        params = SamplingParams(top_k=40, seed=0)
        sample_next(logits[0], params, [], reply_rng(params))
        self.model.forget(0, 0)

    def _place(self, request: SlotRequest, slot: Slot) -> None:
        held = common_prefix_length(slot.cached, request.prompt)
        if held < len(slot.cached):
            self._save(slot)  # what the slot holds past the shared part is about to go
        found = self.saved.best(request.prompt[:-1], better_than=held)  # one token must run to give logits
        if found is not None:
            ids, saved = found[1]
            slot.cached = list(ids) if self.model.restore(slot.seq_id, saved) else []
        reuse = min(common_prefix_length(slot.cached, request.prompt), len(request.prompt) - 1)
        if not self.model.forget(slot.seq_id, reuse):
            self.model.forget(slot.seq_id, 0)  # a cache that cannot cut there: all of it
            reuse = 0
        slot.cached = slot.cached[:reuse]
        slot.request, slot.to_read, slot.prefilled = request, request.prompt[reuse:], len(request.prompt) - reuse

    def _save(self, slot: Slot) -> None:
        """Keep a copy of the slot's sequence in the prompt cache, when the cache has room for one."""
        if self.saved.max_bytes <= 0 or not slot.cached:
            return
        copied = self.model.save(slot.seq_id, len(slot.cached), self.saved.max_bytes)
        if copied is not None:
            saved, size = copied
            self.saved.put(slot.cached, (tuple(slot.cached), saved), size)

    def _step(self) -> None:
        for slot in self.slots:
            if slot.request is not None and slot.request.cancelled.is_set():
                slot.request.reply.reason = "cancelled"
                self._release(slot)
        if self._fill_batch() == 0:
            return
        logits = self.model.decode(self.entries)
        ready = [slot for slot in self.slots if slot.row >= 0]
        rows = [logits[slot.row] for slot in ready]
        draw = self.samplers.map if len(ready) > 1 else map  # one draw: no hop to a sampler thread
        requests = [slot.request for slot in ready if slot.request is not None]  # a row is a running slot's
        drawn = draw(lambda request, row: request.next_token(row), requests, rows)
        for slot, token in zip(ready, list(drawn), strict=True):
            self._sampled(slot, token)

    def _fill_batch(self) -> int:
        """Every decoding slot's token, then prompt chunks while the batch has room; the count."""
        self.entries = []
        decoding = [slot for slot in self.slots if slot.request is not None and len(slot.to_read) == 1]
        reading = [slot for slot in self.slots if slot.request is not None and len(slot.to_read) > 1]
        for slot in decoding + reading:
            slot.row = -1
            count = len(self.entries)
            take = min(len(slot.to_read), self.prefill_chunk, self.batch_size - count)
            if take <= 0:
                continue
            for i, token in enumerate(slot.to_read[:take]):
                last = i == len(slot.to_read) - 1
                self.entries.append(BatchEntry(token, len(slot.cached) + i, slot.seq_id, last))
            if take == len(slot.to_read):
                slot.row = count + take - 1
            slot.cached += slot.to_read[:take]
            slot.to_read = slot.to_read[take:]
        for slot in self.slots:
            if slot.request is None:
                slot.row = -1
        return len(self.entries)

    def _sampled(self, slot: Slot, token: int) -> None:
        """One step of ReplyStream.run for this slot, with the token drawn from its logits."""
        request = slot.request
        assert request is not None  # a row is given to running slots only
        reply = request.reply
        reply.token_sampled()
        if token in request.stop_ids:
            reply.reason = "stop"
            self._release(slot)
            return
        piece = reply.push(token)
        if piece:
            request.events.put(piece)
            for held in reply.take_held():
                request.events.put(held)
        if reply.should_end:
            self._release(slot)
        elif request.cancelled.is_set():
            reply.reason = "cancelled"
            self._release(slot)
        elif len(slot.cached) >= self.slot_context:  # the budget keeps within the context; a guard all the same
            self._release(slot)
        else:
            slot.to_read = [token]

    def _release(self, slot: Slot) -> None:
        request, slot.request, slot.to_read, slot.row = slot.request, None, [], -1
        if request is not None:
            self._finish(request, slot.prefilled)

    def _finish(self, request: SlotRequest, prefilled: int) -> None:
        try:
            with self.format_lock:
                for event in request.reply.finish(prefilled, request.notices):
                    request.events.put(event)
                if request.on_finish is not None:
                    request.on_finish(request.reply)
        except Exception as error:  # noqa: BLE001 - the reply's reader gets it
            request.events.put(error)
        request.events.put(_END)

    def _end(self, request: SlotRequest, error: BaseException) -> None:
        request.events.put(error)
        request.events.put(_END)

    def _fail_all(self, error: BaseException) -> None:
        """Every running request ends with `error`; their sequences are emptied."""
        for slot in self.slots:
            if slot.request is not None:
                request, slot.request, slot.to_read = slot.request, None, []
                self._end(request, error)
            if not self.closed:
                self.model.forget(slot.seq_id, 0)
            slot.cached = []


class SlotsMixin:
    """An engine whose replies run on a SlotScheduler (`self.scheduler`, made by the engine's own
    opener): put before the engine class, `class SlotEngine(SlotsMixin, LlamaEngine)`."""

    supports_inspection = False
    scheduler: SlotScheduler
    format_lock: Any
    prompt_format: Any
    context_length: int
    _remember_reply: Any  # the engine core's: the ids sampled for a reply's text, for the next turn

    @property
    def slots(self) -> int:
        return len(self.scheduler.slots)

    # --- the backend protocol: prompts prepared one at a time, replies run together ---

    def fit(self, *args, **kwargs):
        with self.format_lock:
            return super().fit(*args, **kwargs)

    def chat(self, *args, **kwargs) -> Iterator[Event]:
        with self.format_lock:
            return super().chat(*args, **kwargs)  # type: ignore[misc]

    def complete(self, *args, **kwargs) -> Iterator[Event]:
        with self.format_lock:
            return super().complete(*args, **kwargs)  # type: ignore[misc]

    def cancel(self) -> None:
        """Every running reply stops (a reply's own cancel() stops that one alone)."""
        self.scheduler.cancel_all()

    def close_slots(self) -> None:
        scheduler = getattr(self, "scheduler", None)
        if scheduler is not None and not scheduler.closed:
            scheduler.close()  # its cache goes before the model it was made from

    def _generate(
        self, prompt, params, stop_ids, notices, use_cache, inspect, stop_strings, earlier_reply, reasoning=None
    ) -> SlotReply:
        """The engine core's reply, handed to the slots (the arguments are the core's)."""
        if inspect is not None:
            raise ValueError("the sampling inspector needs one reply at a time: serve with --parallel 1")
        budget = min(params.max_tokens, self.context_length - len(prompt))
        reply = ReplyStream(self.prompt_format, len(prompt), stop_strings, budget, reasoning)
        request = SlotRequest(prompt, params, stop_ids, notices, reply)
        request.on_finish = lambda finished: self._remember_reply(earlier_reply, finished)  # under format_lock
        return SlotReply(self.scheduler, request)
