"""A conversation's prompt computed once (quant/kv_cache.py): the llama.cpp engine restores the saved KV
state that shares the longest prefix with a new prompt, from memory or from disk, and computes the rest.
A state is only ever restored for the same model file and the same leading token ids: a different
model, a different system prompt or an edited earlier message reuse nothing past where they differ,
and the reply is the one a cold engine gives. A damaged file is ignored with a log line."""

from __future__ import annotations

import logging
import shutil

import pytest

from model.inference.backend import collect_reply
from model.inference.sampling import SamplingParams
from model.text.chat_format import Message
from quant.kv_cache import MIN_REUSE, ModelIdentity, StateCache, common_prefix
from quant.llama_engine import LlamaEngine
from tests.helpers.paths import BUILTIN_DIR

GGUF = BUILTIN_DIR / "shakespeare-chat-q8_0.gguf"
GREEDY = SamplingParams(temperature=0.0, max_tokens=4, seed=0)
LONG = "Good morrow, sweet lady; what news from the court of the king? " * 4
CONVERSATION = [Message("system", "You are Hamlet."), Message("user", LONG), Message("assistant", "My lord, the king")]
NEXT = CONVERSATION + [Message("user", "And the queen?")]


def engine(folder=None, path=GGUF, memory_mb=64) -> LlamaEngine:
    return LlamaEngine.load(path, n_threads=1, state_cache_dir=folder, state_cache_mb=memory_mb)


def chat(backend, messages):
    reply = collect_reply(backend.chat(messages, GREEDY))
    assert reply.finished is not None
    return reply.text, reply.finished.prompt_tokens, reply.finished.prefilled_tokens


@pytest.fixture(scope="module")
def cold_replies():
    """What an engine without saved states answers (and computes: the whole prompt)."""
    backend = engine(memory_mb=0)
    try:
        replies = {}
        for key, messages in {
            "conversation": CONVERSATION,
            "next": NEXT,
            "other system": [Message("system", "You are Ophelia."), *NEXT[1:]],
            "edited": [NEXT[0], Message("user", LONG.replace("lady", "lord")), *NEXT[2:]],
        }.items():
            backend.reset_cache()
            text, prompt, prefilled = chat(backend, messages)
            assert prefilled == prompt
            replies[key] = (text, backend.fit(messages, reserve=GREEDY.max_tokens).ids)
        return replies
    finally:
        backend.close()


def test_coming_back_to_a_conversation_computes_only_the_new_message(tmp_path, cold_replies):
    backend = engine(tmp_path / "states")
    try:
        chat(backend, CONVERSATION)
        chat(backend, [Message("user", "Something else entirely, and longer than a few tokens.")])
        text, prompt, prefilled = chat(backend, NEXT)
    finally:
        backend.close()
    assert text == cold_replies["next"][0]
    assert prefilled <= 12 < prompt


def test_after_a_restart_the_state_comes_from_disk(tmp_path, cold_replies):
    backend = engine(tmp_path / "states")
    try:
        chat(backend, CONVERSATION)
    finally:
        backend.close()
    assert list((tmp_path / "states").iterdir())
    restarted = engine(tmp_path / "states")
    try:
        text, prompt, prefilled = chat(restarted, NEXT)
    finally:
        restarted.close()
    assert text == cold_replies["next"][0] and prefilled <= 12 < prompt


@pytest.mark.parametrize("changed", ["other system", "edited"])
def test_a_different_system_prompt_or_an_edited_message_reuses_nothing_past_the_change(tmp_path, cold_replies, changed):
    first = engine(tmp_path / "states")
    try:
        chat(first, NEXT)
    finally:
        first.close()
    fresh = engine(tmp_path / "states")  # nothing in its context: whatever it reuses comes from the saved state
    try:
        text, prompt, prefilled = chat(fresh, NEXT[:0] + _messages(changed))
    finally:
        fresh.close()
    shared = common_prefix(cold_replies["next"][1], cold_replies[changed][1])
    assert text == cold_replies[changed][0]
    assert prefilled >= prompt - shared


def _messages(changed: str) -> list[Message]:
    if changed == "other system":
        return [Message("system", "You are Ophelia."), *NEXT[1:]]
    return [NEXT[0], Message("user", LONG.replace("lady", "lord")), *NEXT[2:]]


def test_a_different_model_file_reuses_nothing(tmp_path, cold_replies):
    copy = tmp_path / "copy.gguf"
    shutil.copyfile(GGUF, copy)  # the same weights, another file: another identity
    states = tmp_path / "states"
    first = engine(states)
    try:
        chat(first, CONVERSATION)
    finally:
        first.close()
    other = engine(states, path=copy)
    try:
        text, prompt, prefilled = chat(other, NEXT)
    finally:
        other.close()
    assert prefilled == prompt and text == cold_replies["next"][0]


@pytest.mark.parametrize("damage", ["truncated", "flipped byte", "garbage", "empty"])
def test_a_damaged_cache_file_is_ignored_with_a_log_line(tmp_path, cold_replies, caplog, damage):
    first = engine(tmp_path / "states")
    try:
        chat(first, CONVERSATION)
    finally:
        first.close()
    for path in (tmp_path / "states").iterdir():
        data = bytearray(path.read_bytes())
        if damage == "truncated":
            data = data[: len(data) // 2]
        elif damage == "flipped byte":
            data[len(data) - 100] ^= 0xFF
        elif damage == "garbage":
            data = bytearray(b"not a state" * 10)
        else:
            data = bytearray()
        path.write_bytes(bytes(data))
    caplog.set_level(logging.WARNING, logger="quant.kv_cache")
    fresh = engine(tmp_path / "states")
    try:
        text, prompt, prefilled = chat(fresh, NEXT)
    finally:
        fresh.close()
    assert text == cold_replies["next"][0] and prefilled == prompt
    assert any("kv cache: ignoring" in record.getMessage() for record in caplog.records)


def test_the_bench_starts_cold_after_reset_cache(tmp_path):
    backend = engine(tmp_path / "states")
    try:
        chat(backend, CONVERSATION)
        backend.reset_cache()
        _, prompt, prefilled = chat(backend, CONVERSATION)
    finally:
        backend.close()
    assert prefilled == prompt


def test_memory_is_bounded_least_recently_used_first_out(tmp_path):
    cache = StateCache(ModelIdentity.of(GGUF, 256), None, memory_bytes=250)
    prompts = [[n] * 40 for n in range(1, 5)]
    for ids in prompts[:2]:
        cache.put(ids, b"s" * 100)
    assert cache.best(prompts[0] + [9]) is not None  # now the most recently used
    cache.put(prompts[2], b"s" * 100)  # 300 bytes: the least recently used (prompts[1]) goes
    assert cache.best(prompts[1] + [9]) is None
    assert cache.best(prompts[0] + [9]) is not None and cache.best(prompts[2] + [9]) is not None
    assert cache.best(prompts[0][: MIN_REUSE - 1]) is None  # too short to be worth a restore


def test_disk_is_bounded_oldest_first_out(tmp_path):
    import os

    folder = tmp_path / "states"
    cache = StateCache(ModelIdentity.of(GGUF, 256), folder, memory_bytes=0, disk_bytes=3_000)
    for n in range(1, 5):
        cache.put([n] * 40, b"s" * 1_000)
        cache.flush()
        for age, path in enumerate(sorted(folder.iterdir(), key=lambda p: p.stat().st_mtime_ns)):
            os.utime(path, ns=(age * 10**9, age * 10**9))  # strictly ordered, whatever the clock's grain
    assert len(list(folder.iterdir())) == 2
    assert cache.best([4] * 40 + [9]) is not None and cache.best([1] * 40 + [9]) is None


def test_an_earlier_reply_goes_back_in_as_the_ids_it_was_sampled_as(tmp_path):
    """Coming back to a conversation after another one: its last reply, whose sampled ids differ from its text
    tokenized again, is sent as those ids (the engine keeps the last replies' ids, not only the last one's),
    so the saved state's prefix holds and only the new message is computed."""
    backend = engine()
    try:
        opening = CONVERSATION[:2]
        sampled = collect_reply(backend.chat(opening, SamplingParams(temperature=1.5, max_tokens=24, seed=3)))
        assert sampled.token_ids != backend.tokenizer.encode(sampled.text)  # this case: a re-tokenization differs
        held = list(backend.cached_ids)  # the prompt and the reply as sampled, as the saved state holds them
        chat(backend, [Message("user", "Something else entirely, and longer than a few tokens.")])
        back = [*opening, Message("assistant", sampled.text), Message("user", "And the queen?")]
        prompt = backend.fit(back, reserve=GREEDY.max_tokens).ids
        _, prompt_tokens, prefilled = chat(backend, back)
    finally:
        backend.close()
    assert prompt[: len(held)] == held
    assert prefilled == prompt_tokens - len(held) < 12
