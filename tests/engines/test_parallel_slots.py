"""Parallel slots (model/inference/slots.py) on both engines: llama.cpp on the built-in Q8_0 GGUF
(quant/slot_engine.py) and torch on the built-in model folder (model/inference/torch_slots.py). A
reply is the same alone, among others, and as the single-reply engine makes it; a request joins a
running batch; a long prompt is read in chunks beside the others' tokens; a cancel frees its slot;
the slots' memory is checked before they start.

Requests join a running batch from inside the scheduler (at a chosen token of another reply), so
what runs together is decided by the steps, never by timing."""

from __future__ import annotations

import pytest

from model.inference.backend import CollectedReply, TextPiece, collect_reply
from model.inference.sampling import SamplingParams
from model.text.chat_format import Message
from tests.helpers.paths import ROOT

GGUF = ROOT / "chatapp" / "builtin" / "shakespeare-chat-q8_0.gguf"
FOLDER = ROOT / "chatapp" / "builtin" / "shakespeare-chat"
ENGINES = ["llama.cpp", "torch"]
LONG_SEED = 0  # at temperature 10 this seed draws no stop token in 200 tokens (checked below)
PROMPTS = [
    "Good morrow, my lord.",
    "What news from the court?",
    "Who goes there?",
    "Speak, I charge thee.",
    "Wherefore art thou sad?",
    "Is the king abroad?",
    "Give me thy hand.",
    "How now, what noise is that?",
]


def open_slots(kind: str, count: int, **options):
    if kind == "torch":
        from model.inference.torch_slots import TorchSlotEngine

        return TorchSlotEngine.open(FOLDER, count, device="cpu", **options)
    from quant.slot_engine import SlotEngine

    return SlotEngine.open(GGUF, count, **options)


@pytest.fixture(scope="module", params=ENGINES)
def kind(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def slots(kind):
    engine = open_slots(kind, 8)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def single(kind):
    if kind == "torch":
        from model.inference.torch_engine import TorchEngine

        engine = TorchEngine.load(FOLDER, device="cpu", compile="off")
    else:
        from quant.llama_engine import LlamaEngine

        engine = LlamaEngine.load(GGUF, state_cache_mb=0)
    yield engine
    engine.close()


def ask(text: str) -> list[Message]:
    return [Message("user", text)]


def long_params() -> SamplingParams:
    return SamplingParams(temperature=10, top_p=1, max_tokens=200, seed=LONG_SEED)


def join_at(reply, token_number: int, joining: list) -> None:
    """`joining` replies enter the scheduler when `reply` draws its token_number-th token."""
    request, drawn = reply.request, []
    original = request.next_token

    def next_token(logits):
        drawn.append(1)
        if len(drawn) == token_number:
            for other in joining:
                other.submitted = True
                other.scheduler.submit(other.request)
        return original(logits)

    request.next_token = next_token


def finish_order(replies: dict) -> list[str]:
    """The names of `replies` in the order their replies end (recorded by the scheduler)."""
    order: list[str] = []
    for name, reply in replies.items():
        original = reply.request.on_finish

        def on_finish(stream, name=name, original=original):
            order.append(name)
            original(stream)

        reply.request.on_finish = on_finish
    return order


def test_a_reply_at_temperature_0_is_the_same_alone_and_among_seven_others(slots):
    greedy = SamplingParams(temperature=0, max_tokens=40)
    alone = collect_reply(slots.chat(ask(PROMPTS[0]), greedy))
    first = slots.chat(ask(PROMPTS[0]), greedy)
    others = [slots.chat(ask(text), SamplingParams(temperature=0.8, seed=i)) for i, text in enumerate(PROMPTS[1:])]
    join_at(first, 1, others)
    together = collect_reply(first)
    rest = [collect_reply(other) for other in others]
    assert together.text == alone.text and together.token_ids == alone.token_ids
    assert all(reply.finished is not None and reply.finished.completion_tokens > 0 for reply in rest)


def test_each_reply_among_eight_is_the_one_the_single_engine_makes_with_its_own_parameters(slots, single):
    params = [
        SamplingParams(temperature=0, max_tokens=30),
        SamplingParams(temperature=0.8, seed=1, max_tokens=30),
        SamplingParams(temperature=1.2, seed=2, top_k=20, max_tokens=30),
        SamplingParams(temperature=0.8, seed=3, top_p=0.5, repetition_penalty=1.3, max_tokens=30),
        SamplingParams(temperature=0.8, seed=4, stop=["the"], max_tokens=30),
        SamplingParams(temperature=0.9, seed=5, min_p=0.1, max_tokens=5),
        SamplingParams(temperature=2.0, seed=6, max_tokens=30),
        SamplingParams(temperature=0.7, seed=7, max_tokens=30),
    ]
    expected = [collect_reply(single.chat(ask(text), p)) for text, p in zip(PROMPTS, params, strict=True)]
    replies = [slots.chat(ask(text), p) for text, p in zip(PROMPTS, params, strict=True)]
    join_at(replies[0], 1, replies[1:])
    got = [collect_reply(reply) for reply in replies]
    for want, have in zip(expected, got, strict=True):
        assert (have.text, have.finished.reason) == (want.text, want.finished.reason)
    assert "the" not in got[4].text and got[5].finished.completion_tokens <= 5


def test_a_request_joins_the_running_batch_and_ends_before_the_long_reply(slots):
    long = slots.complete("KING HENRY:\n", long_params())
    short = slots.chat(ask(PROMPTS[0]), SamplingParams(temperature=0, max_tokens=20))
    order = finish_order({"long": long, "short": short})
    join_at(long, 5, [short])
    long_reply, short_reply = collect_reply(long), collect_reply(short)
    assert long_reply.finished.completion_tokens == 200
    assert short_reply.finished.completion_tokens <= 20
    assert order == ["short", "long"]  # it did not wait for the long one to end


def test_a_long_prompt_is_read_in_chunks_while_the_others_keep_decoding(kind):
    engine = open_slots(kind, 2, prefill_chunk=16)
    try:
        scheduler = engine.scheduler
        batches: list[tuple[int, list[bool]]] = []
        fill = scheduler._fill_batch

        def recorded_fill() -> int:
            count = fill()
            batches.append((count, [slot.row >= 0 for slot in scheduler.slots]))
            return count

        scheduler._fill_batch = recorded_fill
        decoding = engine.complete("KING HENRY:\n", long_params())
        long_text = " ".join(["Now is the winter of our discontent made glorious summer by this sun of York."] * 12)
        reading = engine.complete(long_text, SamplingParams(temperature=0, max_tokens=5))
        join_at(decoding, 3, [reading])
        decoded, read = collect_reply(decoding), collect_reply(reading)
        prompt_tokens = read.finished.prompt_tokens
        assert prompt_tokens > 200 and decoded.finished.completion_tokens == 200
        chunked = [rows for count, rows in batches if count > 2]  # a step with part of the long prompt in it
        assert len(chunked) >= prompt_tokens // 16 - 1  # read 16 tokens at a time, not in one step
        assert all(rows[0] for rows in chunked)  # the decoding reply drew a token at each of those steps
        assert max(count for count, _ in batches) <= 16 + 2
    finally:
        engine.close()


def test_a_cancelled_reply_frees_its_slot_and_the_others_are_untouched(slots):
    greedy = SamplingParams(temperature=0, max_tokens=30)
    alone = collect_reply(slots.chat(ask(PROMPTS[1]), greedy))
    long = slots.complete("KING HENRY:\n", long_params())
    other = slots.chat(ask(PROMPTS[1]), greedy)
    join_at(long, 1, [other])
    first = next(long)
    assert isinstance(first, TextPiece)
    long.cancel()
    cancelled = CollectedReply()
    cancelled.add(first)
    for event in long:
        cancelled.add(event)
    assert cancelled.finished is not None and cancelled.finished.reason == "cancelled"
    assert cancelled.finished.completion_tokens < 200
    assert collect_reply(other).text == alone.text
    assert slots.scheduler.busy_slots == 0


@pytest.mark.parametrize("cache_mb", [64, 0])
def test_a_prompt_seen_before_is_restored_from_the_slots_cache_whichever_slot_it_lands_on(kind, cache_mb):
    engine = open_slots(kind, 2, cache_mb=cache_mb)
    try:
        greedy = SamplingParams(temperature=0, max_tokens=10)
        first = collect_reply(engine.chat(ask(PROMPTS[0]), greedy))
        assert first.finished.prefilled_tokens == first.finished.prompt_tokens
        others = [engine.chat(ask(text), greedy) for text in PROMPTS[1:3]]
        join_at(others[0], 1, others[1:])  # both slots taken: the first conversation's sequence is overwritten
        for other in others:
            collect_reply(other)
        again = collect_reply(engine.chat(ask(PROMPTS[0]), greedy))
        assert (again.text, again.token_ids) == (first.text, first.token_ids)
        if cache_mb:
            assert again.finished.prefilled_tokens == 1  # the one token that gives the logits
            assert len(engine.scheduler.saved) >= 1
        else:
            assert again.finished.prefilled_tokens > 1 and len(engine.scheduler.saved) == 0
    finally:
        engine.close()


def compiled_graphs() -> int:
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


@pytest.mark.slow
def test_the_torch_slots_compiled_step_takes_over_mid_reply_and_the_replies_stay_the_same(tmp_path, monkeypatch):
    from model.inference.torch_slots import TorchSlotEngine

    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    prompts = [[5, 6, 7], [8, 9], [10, 11, 12, 13], [14]]  # no stop token: every reply runs its max_tokens
    lengths = [40, 30, 20, 14]  # on slots 0-3: as they end, the step runs on 4 rows, then 2, then 1
    greedy = [SamplingParams(temperature=0, max_tokens=length) for length in lengths]
    eager = open_slots("torch", 4)
    try:
        expected = [
            collect_reply(eager.generate_ids(ids, params, stop_ids=set())).token_ids
            for ids, params in zip(prompts, greedy, strict=True)
        ]
    finally:
        eager.close()
    compiled = TorchSlotEngine.open(FOLDER, 4, device="cpu", compile="on", compile_cache=tmp_path / "kernels")
    try:
        assert compiled.slots_model.compiling.row_buckets == [1, 2, 4]
        replies = [
            compiled.generate_ids(ids, params, stop_ids=set()) for ids, params in zip(prompts, greedy, strict=True)
        ]
        join_at(replies[0], 1, replies[1:])
        first = replies[0].request
        drawn, original = [], first.next_token

        graphs = []

        def next_token(logits):
            drawn.append(1)
            if len(drawn) == 10:
                assert compiled.wait_for_compile(600) == "on"  # from the next step on, the compiled one
                graphs.append(compiled_graphs())
            return original(logits)

        first.next_token = next_token
        got = [collect_reply(reply).token_ids for reply in replies]
        assert compiled.slots_model.compiled_step is not None
        assert compiled_graphs() == graphs[0]  # every bucket was compiled before: nothing recompiles in a step
        assert got == expected and [len(ids) for ids in got] == lengths
    finally:
        compiled.close()


def test_a_reply_cancelled_before_it_starts_never_runs(slots):
    reply = slots.chat(ask(PROMPTS[2]), SamplingParams(temperature=0))
    reply.cancel()
    collected = collect_reply(reply)
    assert collected.finished is not None
    assert (collected.finished.reason, collected.finished.completion_tokens, collected.text) == ("cancelled", 0, "")


def test_slots_whose_kv_cache_does_not_fit_the_memory_are_refused_in_one_line(kind):
    from model.inference.slots import SlotMemoryError

    with pytest.raises(SlotMemoryError) as refused:
        open_slots(kind, 8, memory_available=1_000_000)
    message = str(refused.value)
    assert "\n" not in message and "--parallel 8" in message and "8 slots x 256 tokens" in message
    with pytest.raises(ValueError, match="--parallel must be"):
        open_slots(kind, 0)


def test_the_kv_cache_size_counts_every_layer_and_position(slots, kind):
    if kind == "torch":
        config = slots.model.config
        per_slot = 2 * config.n_layer * config.context_length * config.n_embd * 4  # keys and values, float32
        assert slots.kv_cache_bytes == 8 * per_slot
        return
    from quant.llama_slots import kv_cache_bytes

    model = slots.llm.model
    assert kv_cache_bytes(model, 512) == 2 * kv_cache_bytes(model, 256) > 0
    assert slots.kv_cache_bytes == kv_cache_bytes(model, 8 * 256)


def test_the_inspector_is_refused_on_slots(slots):
    with pytest.raises(ValueError, match="--parallel 1"):
        slots.chat(ask(PROMPTS[0]), SamplingParams(), inspect=lambda step: None)


def test_a_foreign_file_is_prompted_by_its_own_template_as_the_single_engine_does(tmp_path):
    from quant.llama_engine import LlamaEngine
    from quant.slot_engine import SlotEngine
    from tests.helpers.foreign_gguf import write_foreign_gguf

    path = write_foreign_gguf(tmp_path / "r1.gguf", "deepseek-r1-qwen")
    params = SamplingParams(temperature=0.8, seed=1, max_tokens=20)
    messages = [Message("system", "Be brief."), Message("user", "hi")]
    engines = [SlotEngine.open(path, 2), LlamaEngine.load(path, state_cache_mb=0)]
    try:
        slot_reply, single_reply = (engine.chat(messages, params) for engine in engines)
        pieces = [
            [(e.kind, e.text, e.token_ids) for e in reply if isinstance(e, TextPiece)]
            for reply in (slot_reply, single_reply)
        ]
        assert pieces[0] == pieces[1] and pieces[0]
        assert engines[0].fit(messages, 20).ids == engines[1].fit(messages, 20).ids
    finally:
        for engine in engines:
            engine.close()
