"""What both engines do alike, tested once over both: the torch engine in this
process and llama.cpp in its worker process (the app's default), on the same
tiny model (a model folder, and its F32 GGUF export)."""

from __future__ import annotations

import threading

import pytest

from model.inference.backend import Finished, TextPiece, collect_reply
from model.inference.sampling import SamplingError, SamplingParams
from model.text.chat_format import Message
from tests.helpers.gguf_exports import exported

GREEDY = dict(temperature=0.0)


@pytest.fixture(scope="module", params=["torch", "llama.cpp"])
def engine(request, tiny_model_dir):
    if request.param == "torch":
        from model.inference.torch_engine import TorchEngine

        yield TorchEngine.load(tiny_model_dir, device="cpu")
        return
    from quant.llama_worker import WorkerBackend

    backend = WorkerBackend.load(exported(tiny_model_dir, "f32")[0])
    yield backend
    backend.close()


def collect(events) -> tuple[str, list[int], Finished, list[str]]:
    reply = collect_reply(events)
    return reply.text, reply.token_ids, reply.finished, reply.pieces


def test_a_cancel_before_the_first_token_is_honoured(engine):
    events = engine.chat([Message("user", "Hark")], SamplingParams(max_tokens=50, seed=2))
    engine.cancel()
    _, ids, finished, _ = collect(events)
    assert finished.reason == "cancelled" and ids == [] and finished.completion_tokens == 0
    _, again, finished, _ = collect(engine.chat([Message("user", "Hark")], SamplingParams(max_tokens=5, seed=2)))
    assert finished.reason in ("stop", "length") and finished.completion_tokens >= 1  # the next reply is not cancelled


def test_a_cancel_from_another_thread_stops_within_one_token(engine):
    events = engine.chat(
        [Message("user", "Tell me a long tale")], SamplingParams(max_tokens=200, seed=9, temperature=1.5)
    )
    tokens_after_cancel, cancelled = 0, False
    for event in events:
        if isinstance(event, TextPiece):
            if cancelled:
                tokens_after_cancel += len(event.token_ids)
            elif event.token_ids:
                thread = threading.Thread(target=engine.cancel)
                thread.start()
                thread.join()
                cancelled = True
        else:
            finished = event
    assert cancelled and finished.reason == "cancelled" and tokens_after_cancel <= 1


def test_leaving_a_reply_early_leaves_the_engine_ready(engine):
    events = engine.complete("The king", SamplingParams(max_tokens=100, seed=3))
    next(iter(events))
    events.close()
    _, _, finished, _ = collect(engine.complete("The king", SamplingParams(max_tokens=3, seed=3)))
    assert finished.completion_tokens == 3


def test_stop_strings_across_piece_boundaries(engine):
    params = SamplingParams(max_tokens=60, seed=1, temperature=1.0, top_p=1.0)
    text, _, _, pieces = collect(engine.complete("The king", params))
    boundary = next(i for i in range(1, len(pieces)) if pieces[i - 1] and pieces[i] and len("".join(pieces[:i])) >= 2)
    at = len("".join(pieces[:boundary]))
    stop = text[at - 1 : at + 1]  # the last character of one piece and the first of the next
    stopped, _, finished, _ = collect(
        engine.complete("The king", SamplingParams(**{**params.to_dict(), "stop": [stop]}))
    )
    assert finished.reason == "stop" and stopped == text[: text.index(stop)]


def test_the_context_is_never_exceeded_over_a_long_chat(engine):
    n = engine.context_length
    long_text = "Friends, Romans, countrymen, lend me your ears; " * 40
    history: list[Message] = [Message("system", long_text)]
    totals = []
    for turn in range(6):
        history.append(Message("user", f"Turn {turn}: " + long_text[: 200 * (turn + 1)]))
        params = SamplingParams(temperature=1.0, max_tokens=n, seed=turn)
        reply, _, finished, _ = collect(engine.chat(history, params))
        totals.append(finished.prompt_tokens + finished.completion_tokens)
        history.append(Message("assistant", reply))
    _, _, finished, _ = collect(engine.complete(long_text * 3, SamplingParams(max_tokens=10**6, seed=1)))
    totals.append(finished.prompt_tokens + finished.completion_tokens)
    assert all(0 < total <= n for total in totals), (n, totals)
    with pytest.raises(ValueError):
        engine.generate_ids([1] * n, SamplingParams(max_tokens=5), stop_ids=set())


def test_the_next_turn_reuses_the_cached_prefix_and_gives_what_a_cold_start_gives(engine):
    params = SamplingParams(max_tokens=12, **GREEDY)
    history = [Message("system", "Be brief."), Message("user", "Who art thou?")]
    engine.reset_cache()
    reply, _, first, _ = collect(engine.chat(history, params))
    history += [Message("assistant", reply), Message("user", "And whence comest thou?")]
    _, ids, second, _ = collect(engine.chat(history, params))
    assert second.prefilled_tokens <= second.prompt_tokens - first.prompt_tokens
    engine.reset_cache()
    _, cold_ids, cold, _ = collect(engine.chat(history, params))
    assert cold.prefilled_tokens == cold.prompt_tokens and cold_ids == ids


def test_continuing_a_reply_gives_what_an_uninterrupted_reply_gives(engine):
    history = [Message("user", "Speak of the moon")]
    whole, whole_ids, _, _ = collect(engine.chat(history, SamplingParams(max_tokens=12, **GREEDY)))
    start, start_ids, first, _ = collect(engine.chat(history, SamplingParams(max_tokens=5, **GREEDY)))
    assert first.reason == "length" and start_ids == whole_ids[:5]
    more, more_ids, second, _ = collect(
        engine.chat(history + [Message("assistant", start)], SamplingParams(max_tokens=7, **GREEDY), continue_last=True)
    )
    assert start_ids + more_ids == whole_ids[: len(start_ids) + len(more_ids)]
    assert second.prefilled_tokens <= 1  # the reply's own ids were kept: only the last one runs again


def test_the_inspector_reports_every_token_with_its_candidates(engine):
    steps: list[dict] = []
    text, ids, finished, _ = collect(
        engine.chat([Message("user", "Hail")], SamplingParams(max_tokens=8, seed=4, top_k=5), inspect=steps.append)
    )
    assert engine.supports_inspection and len(steps) >= finished.completion_tokens >= 1
    for step in steps:
        drawn = [c for c in step["candidates"] if c["drawn"]]
        assert len(drawn) == 1 and drawn[0]["final_prob"] > 0
        assert sum(c["final_prob"] for c in step["candidates"]) <= 1 + 1e-6
        assert sum(c["final_prob"] > 0 for c in step["candidates"]) <= 5  # top-k 5
    greedy: list[dict] = []
    collect(engine.chat([Message("user", "Hail")], SamplingParams(max_tokens=3, **GREEDY), inspect=greedy.append))
    assert all(next(c for c in s["candidates"] if c["drawn"])["final_prob"] == 1.0 for s in greedy)


def test_a_seed_reproduces_a_reply_and_no_seed_varies(engine):
    params = dict(temperature=1.0, top_p=1.0, max_tokens=30)
    _, a, _, _ = collect(engine.complete("Now", SamplingParams(seed=11, **params)))
    _, b, _, _ = collect(engine.complete("Now", SamplingParams(seed=11, **params)))
    _, c, _, _ = collect(engine.complete("Now", SamplingParams(seed=12, **params)))
    _, d, _, _ = collect(engine.complete("Now", SamplingParams(**params)))
    _, e, _, _ = collect(engine.complete("Now", SamplingParams(**params)))
    assert a == b and a != c and d != e
    _, greedy, _, _ = collect(engine.complete("Now", SamplingParams(temperature=0, max_tokens=20)))
    _, greedy_seeded, _, _ = collect(engine.complete("Now", SamplingParams(temperature=0, max_tokens=20, seed=99)))
    assert greedy == greedy_seeded  # greedy ignores the seed


def test_finished_reports_the_numbers(engine):
    messages = [Message("user", "Speak.")]
    _, ids, finished, _ = collect(engine.chat(messages, SamplingParams(seed=1, max_tokens=20)))
    assert finished.reason in ("stop", "length") and finished.completion_tokens == len(ids) <= 20
    assert finished.prompt_tokens == len(engine.fit(messages, reserve=20).ids)
    assert finished.time_to_first_token_s > 0 and finished.tokens_per_second >= 0


def test_recomputing_without_the_cache_gives_the_same_tokens(engine):
    prompt = engine.prompt_ids("Once more unto the breach")
    params = SamplingParams(max_tokens=10, **GREEDY)
    engine.reset_cache()
    _, cached, a, _ = collect(engine.generate_ids(prompt, params, stop_ids=set()))
    _, recomputed, b, _ = collect(engine.generate_ids(prompt, params, stop_ids=set(), use_cache=False))
    assert cached == recomputed and len(cached) == 10 and a.prefilled_tokens == b.prefilled_tokens == len(prompt)


def test_bad_input_is_refused_before_anything_runs(engine):
    with pytest.raises(SamplingError, match="top_p"):
        engine.chat([Message("user", "hi")], SamplingParams(top_p=2.0))
    with pytest.raises(ValueError, match="continuing needs an assistant reply"):
        engine.chat([Message("user", "hi")], SamplingParams(), continue_last=True)
    fitted = engine.fit([Message("user", "hi " * 5000)], reserve=16)
    assert len(fitted.ids) <= engine.context_length - 16 and fitted.truncated_tokens > 0 and fitted.notices
