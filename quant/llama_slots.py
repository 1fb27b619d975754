"""Many replies at once on one llama.cpp context: parallel slots with continuous batching. No torch.

One context holds N sequences (a slot each, its own sequence id and its own part of the KV cache).
A scheduler thread runs the steps: each step builds one batch with the next token of every slot
that is decoding and a chunk of at most `prefill_chunk` prompt tokens of every slot that is still
reading its prompt (so a long prompt never stalls the others' tokens), runs one `llama_decode`,
and samples each slot's next token from its own logits row with the engine core's sampler
(model/inference/sampling.py) and that request's own parameters and seed. A request that arrives
while others run takes a free slot at the next step; one that ends, is cancelled or fails frees
its slot at once. Whoever reads a reply never slows the scheduler: events go into the request's
unbounded queue, at most one per token of its budget.

ReplyStream (model/inference/reply_stream.py) turns each slot's tokens into text and its Finished,
exactly as for a single reply; its own `run()` loop pulls logits synchronously, so the step below
does the same work one token at a time: sample, stop token, push, budget or stop string, cancel.

A free slot keeps what its last reply left in its sequence: a new request goes to the free slot
whose cached tokens share the longest prefix with its prompt (a conversation's next turn finds its
earlier turns computed), and the rest of that sequence is removed (`llama_memory_seq_rm`).
"""

from __future__ import annotations

import ctypes
import queue
import random
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from model.inference.backend import Event
from model.inference.reply_stream import ReplyStream, common_prefix_length
from model.inference.sampling import SamplingParams, sample_next
from model.inference.threads import available_cores

REPETITION_WINDOW = 64  # as the engine core's: tokens the repetition penalty looks back over
DEFAULT_PREFILL_CHUNK = 256  # prompt tokens one slot may add to a step
IDLE_POLL_S = 0.5  # how often an idle scheduler looks whether it is being closed
_END = object()  # the last item of a request's queue


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
        seed = self.params.seed if self.params.seed is not None else random.randrange(2**63)
        self.rng = np.random.default_rng(seed)
        self.prompt_tail = self.prompt[-REPETITION_WINDOW:]

    def next_token(self, logits: np.ndarray) -> int:
        """The engine core's draw: repetition history of the prompt's tail and the reply so far."""
        history = (self.prompt_tail + self.reply.generated[-REPETITION_WINDOW:])[-REPETITION_WINDOW:]
        return sample_next(logits, self.params, history, self.rng)


class SlotReply:
    """The events of one request, as an iterator (what Backend.chat returns), with its own cancel().
    The request reaches the scheduler on the first next(), as the engine core starts a reply lazily."""

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
    """N slots on one context of `model` (a llama_model pointer), each of `slot_context` tokens.
    `base_params`: the llama_context_params the single-reply engine uses (flash attention, KV types,
    rope): the same here, so that a reply's logits are the ones that engine computes. `threads`:
    (n_threads, n_threads_batch); llama.cpp runs a step of one token on the first and any larger
    batch (several slots' tokens, a prompt's chunk) on the second, as in llama-server."""

    def __init__(
        self,
        model: Any,
        base_params: Any,
        slots: int,
        slot_context: int,
        threads: tuple[int, int],
        prefill_chunk: int = DEFAULT_PREFILL_CHUNK,
        format_lock: Any = None,
    ):
        """`format_lock`: held while a reply finishes (ReplyStream.finish may tell the prompt format
        the reply as written, while another thread fits a prompt with it)."""
        import llama_cpp

        self.format_lock = format_lock if format_lock is not None else threading.Lock()
        self.slot_context, self.prefill_chunk = slot_context, prefill_chunk
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(model))
        self.batch_size = prefill_chunk + slots  # every slot's token, and one chunk of prompt beside them
        params = llama_cpp.llama_context_params.from_buffer_copy(base_params)  # the single engine's settings
        params.n_ctx = slots * slot_context  # split evenly: the KV cache is not unified across sequences
        params.n_seq_max = slots
        params.n_batch = params.n_ubatch = self.batch_size
        params.n_threads, params.n_threads_batch = threads
        self.ctx = llama_cpp.llama_init_from_model(model, params)
        if not self.ctx:
            raise RuntimeError(f"llama.cpp could not make a context of {slots} slots x {slot_context} tokens")
        self.memory = llama_cpp.llama_get_memory(self.ctx)
        self.batch = llama_cpp.llama_batch_init(self.batch_size, 0, 1)
        self.slots = [Slot(seq_id) for seq_id in range(slots)]
        # the slots' draws run side by side: over a 262,144-token vocabulary one takes milliseconds,
        # mostly in numpy, which lets go of the GIL; each request has its own generator, so the
        # tokens do not depend on the order the draws finish in
        self.samplers = ThreadPoolExecutor(max_workers=min(slots, available_cores()), thread_name_prefix="slot-draw")
        self.waiting: queue.SimpleQueue = queue.SimpleQueue()
        self.closing = threading.Event()
        self.thread = threading.Thread(target=self._run, name="llama-slots", daemon=True)
        self.thread.start()

    # --- from other threads ---

    def submit(self, request: SlotRequest) -> None:
        if self.closing.is_set():
            request.events.put(RuntimeError("the engine is closed"))
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
        import llama_cpp

        self.closing.set()
        self.thread.join()
        self.samplers.shutdown()
        llama_cpp.llama_batch_free(self.batch)
        llama_cpp.llama_free(self.ctx)
        self.ctx = None

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

    def _place(self, request: SlotRequest, slot: Slot) -> None:
        import llama_cpp

        reuse = min(common_prefix_length(slot.cached, request.prompt), len(request.prompt) - 1)
        if not llama_cpp.llama_memory_seq_rm(self.memory, slot.seq_id, reuse, -1):
            llama_cpp.llama_memory_seq_rm(self.memory, slot.seq_id, -1, -1)  # a cache that cannot cut: all of it
            reuse = 0
        slot.cached = slot.cached[:reuse]
        slot.request, slot.to_read, slot.prefilled = request, request.prompt[reuse:], len(request.prompt) - reuse

    def _step(self) -> None:
        import llama_cpp

        for slot in self.slots:
            if slot.request is not None and slot.request.cancelled.is_set():
                slot.request.reply.reason = "cancelled"
                self._release(slot)
        count = self._fill_batch()
        if count == 0:
            return
        result = llama_cpp.llama_decode(self.ctx, self.batch)
        if result != 0:
            raise RuntimeError(f"llama.cpp could not decode a batch of {count} tokens (error {result})")
        ready = [slot for slot in self.slots if slot.row >= 0]
        rows = [self._logits(slot.row) for slot in ready]
        drawn = self.samplers.map(lambda slot, logits: slot.request.next_token(logits), ready, rows)
        for slot, token in zip(ready, list(drawn), strict=True):
            self._sampled(slot, token)

    def _logits(self, row: int) -> np.ndarray:
        import llama_cpp

        pointer = llama_cpp.llama_get_logits_ith(self.ctx, row)
        return np.ctypeslib.as_array(pointer, shape=(self.n_vocab,)).copy()

    def _fill_batch(self) -> int:
        """Every decoding slot's token, then prompt chunks while the batch has room; the count."""
        count = 0
        decoding = [slot for slot in self.slots if slot.request is not None and len(slot.to_read) == 1]
        reading = [slot for slot in self.slots if slot.request is not None and len(slot.to_read) > 1]
        for slot in decoding + reading:
            slot.row = -1
            take = min(len(slot.to_read), self.prefill_chunk, self.batch_size - count)
            if take <= 0:
                continue
            for i, token in enumerate(slot.to_read[:take]):
                self._put(count + i, token, len(slot.cached) + i, slot.seq_id, i == len(slot.to_read) - 1)
            if take == len(slot.to_read):
                slot.row = count + take - 1
            slot.cached += slot.to_read[:take]
            slot.to_read = slot.to_read[take:]
            count += take
        for slot in self.slots:
            if slot.request is None:
                slot.row = -1
        self.batch.n_tokens = count
        return count

    def _put(self, index: int, token: int, position: int, seq_id: int, wants_logits: bool) -> None:
        self.batch.token[index] = token
        self.batch.pos[index] = position
        self.batch.n_seq_id[index] = 1
        self.batch.seq_id[index][0] = seq_id
        self.batch.logits[index] = wants_logits

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
        import llama_cpp

        for slot in self.slots:
            if slot.request is not None:
                request, slot.request, slot.to_read = slot.request, None, []
                self._end(request, error)
            if self.ctx is not None:
                llama_cpp.llama_memory_seq_rm(self.memory, slot.seq_id, -1, -1)
            slot.cached = []


def _metadata_int(model: Any, key: str) -> int | None:
    import llama_cpp

    buffer = ctypes.create_string_buffer(64)
    if llama_cpp.llama_model_meta_val_str(model, key.encode(), buffer, len(buffer)) < 0:
        return None
    try:
        return int(buffer.value.decode())
    except ValueError:
        return None


def kv_cache_bytes(model: Any, tokens: int) -> int:
    """The KV cache llama.cpp allocates for `tokens` positions of `model`, at 16 bits per value
    (its default type): keys and values, every layer, every KV head (an upper bound where layers use
    a sliding window). A head's size is the file's key_length / value_length when it has them
    (Gemma's heads are wider than n_embd / n_head)."""
    import llama_cpp

    layers = llama_cpp.llama_model_n_layer(model)
    heads, kv_heads = llama_cpp.llama_model_n_head(model), llama_cpp.llama_model_n_head_kv(model)
    buffer = ctypes.create_string_buffer(64)
    llama_cpp.llama_model_meta_val_str(model, b"general.architecture", buffer, len(buffer))
    architecture = buffer.value.decode(errors="replace")
    head_size = llama_cpp.llama_model_n_embd(model) // max(heads, 1)
    key_size = _metadata_int(model, f"{architecture}.attention.key_length") or head_size
    value_size = _metadata_int(model, f"{architecture}.attention.value_length") or head_size
    return layers * tokens * kv_heads * (key_size + value_size) * 2
