"""The torch engine keeps recent conversations' KV caches (model/inference/prompt_cache.py): coming back to
a conversation prefills only its new tokens, with the same reply as a cold engine."""

from __future__ import annotations

import pytest

from model.inference.backend import Finished, TextPiece
from model.inference.prompt_cache import PromptCache
from model.inference.sampling import SamplingParams
from model.inference.torch_engine import TorchEngine
from model.text.chat_format import Message

GREEDY = SamplingParams(temperature=0.0, max_tokens=24, seed=0)


@pytest.fixture(scope="module")
def engine(any_model_dir) -> TorchEngine:
    return TorchEngine.load(any_model_dir, device="cpu", compile="off")


@pytest.fixture(scope="module")
def cold(any_model_dir) -> TorchEngine:
    return TorchEngine.load(any_model_dir, device="cpu", compile="off")


def reply(engine, messages: list[Message]) -> tuple[str, Finished]:
    text, finished = "", None
    for event in engine.chat(messages, GREEDY):
        if isinstance(event, TextPiece):
            text += event.text
        elif isinstance(event, Finished):
            finished = event
    assert finished is not None
    return text, finished


def cold_reply(cold: TorchEngine, warm: TorchEngine, messages: list[Message]) -> str:
    """The reply of an engine that computes the whole prompt, the same ids as the warm engine's."""
    cold.reset_cache()
    cold.known_replies = dict(warm.known_replies)
    prompt = cold.fit(messages, cold.default_reserve(GREEDY)).ids
    assert prompt == warm.fit(messages, warm.default_reserve(GREEDY)).ids
    text, finished = reply(cold, messages)
    assert finished.prefilled_tokens == len(prompt)
    return text


def prompt_length(engine, messages) -> int:
    return len(engine.fit(messages, engine.default_reserve(GREEDY)).ids)


def test_a_then_b_then_a_again_prefills_only_a_s_new_tokens(engine, cold):
    engine.reset_cache()
    a = [Message("system", "You are Horatio."), Message("user", "Good morrow, my lord. What news from the court?")]
    b = [Message("system", "You are Ophelia."), Message("user", "Where is your father?")]
    a_reply, _ = reply(engine, a)
    a_held = list(engine.cached_ids)  # A's prompt and reply, as the cache holds them
    reply(engine, b)
    a2 = [*a, Message("assistant", a_reply), Message("user", "And the king?")]
    text, finished = reply(engine, a2)
    prompt = engine.fit(a2, engine.default_reserve(GREEDY)).ids
    assert prompt[: len(a_held)] == a_held  # A's reply goes back in as the ids it was sampled as
    assert finished.prefilled_tokens == len(prompt) - len(a_held)  # only the new tokens
    assert 0 < finished.prefilled_tokens < len(prompt) // 2
    assert text == cold_reply(cold, engine, a2)
    # and B again, after A: B's kept cache too
    b2 = [*b, Message("assistant", "In the lobby."), Message("user", "Good.")]
    text, finished = reply(engine, b2)
    assert finished.prefilled_tokens < prompt_length(engine, b2) - prompt_length(engine, b) + 1
    assert text == cold_reply(cold, engine, b2)


@pytest.mark.parametrize("change", ["system prompt", "earlier message"])
def test_a_changed_conversation_reuses_only_what_comes_before_the_change(engine, cold, change):
    engine.reset_cache()
    a = [
        Message("system", "You are Horatio."),
        Message("user", "Good morrow, my lord."),
        Message("assistant", "Good morrow to you."),
        Message("user", "What news from the court?"),
    ]
    reply(engine, a)
    reply(engine, [Message("user", "Something else entirely, to move the cache along.")])
    if change == "system prompt":
        edited = [Message("system", "You are Hamlet."), *a[1:]]
    else:
        edited = [*a[:2], Message("assistant", "Good evening to you."), a[3]]
    prompt, original = engine.fit(edited, engine.default_reserve(GREEDY)).ids, engine.fit(a, 64).ids
    changed_at = next(i for i, (x, y) in enumerate(zip(prompt, original)) if x != y)
    text, finished = reply(engine, edited)
    assert finished.prefilled_tokens == len(prompt) - changed_at  # from the change on
    assert text == cold_reply(cold, engine, edited)


def test_the_bound_evicts_the_least_recently_used(engine):
    engine.reset_cache()
    conversations = [[Message("user", f"Conversation number {n}, of the many.")] for n in range(3)]
    reply(engine, conversations[0])
    one = engine.prompt_cache.bytes
    assert len(engine.prompt_cache) == 1 and one > 0
    kept = engine.prompt_cache
    engine.prompt_cache = PromptCache(max_bytes=int(one * 2.5))  # room for two such conversations
    try:
        for messages in conversations:
            reply(engine, messages)
        assert len(engine.prompt_cache) == 2
        _, finished = reply(engine, conversations[0])  # evicted: computed again past the shared opening
        assert finished.prefilled_tokens > 1
        _, finished = reply(engine, conversations[2])  # kept
        assert finished.prefilled_tokens == 1
    finally:
        engine.prompt_cache = kept


def test_the_cache_keeps_the_longest_shared_prefix_and_drops_what_a_longer_entry_holds():
    cache: PromptCache[str] = PromptCache(max_bytes=100)
    cache.put([1, 2, 3], "abc", 10)
    cache.put([1, 2, 3, 4, 5], "abcde", 10)  # the conversation went on: [1, 2, 3] is dropped
    cache.put([1, 9], "ai", 10)
    assert len(cache) == 2 and cache.bytes == 20
    assert cache.best([1, 2, 3, 4, 7]) == (4, "abcde")
    assert cache.best([1, 9, 9]) == (2, "ai")
    assert cache.best([1, 2], better_than=2) is None
    cache.put([7] * 3, "too big", 101)
    assert len(cache) == 2
