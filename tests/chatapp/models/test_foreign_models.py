"""GGUF files a user brings (Llama 3, Qwen2, Gemma, a base model without a
template; tiny random-weight copies built in tests/helpers/foreign_gguf.py): prompts
are exactly what the file's own template gives, typed control strings stay
plain text, replies stop at the family's end of turn, the CLI and the TUI run
them, and files that would abort llama.cpp or hang the template renderer are a
one-line error that leaves the app running."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from model.inference.sampling import SamplingParams
from model.text.chat_format import Message
from model.text.chat_template import PLAIN_STOP_STRINGS, fold_system_message
from tests.helpers.foreign_gguf import BROKEN_KINDS, FAMILIES, write_broken_gguf, write_foreign_gguf
from tests.helpers.tui_app import reply_texts, send, wait_idle, wait_until

INSTRUCT = ["llama3", "qwen2", "gemma"]
CONVERSATION = [
    Message("system", "You are terse."),
    Message("user", "Hi"),
    Message("assistant", "Hello!"),
    Message("user", "How are you? 🙂 héllo"),
]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("foreign-models")
    written = {family: write_foreign_gguf(folder / f"{family}.gguf", family) for family in FAMILIES}
    written |= {kind: write_broken_gguf(folder / f"broken-{kind}.gguf", kind) for kind in BROKEN_KINDS}
    written["hanging"] = write_foreign_gguf(
        folder / "hanging.gguf",
        "qwen2",
        chat_template="{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    )
    written["huge"] = write_foreign_gguf(folder / "huge.gguf", "qwen2", chat_template="{{ 'x' * 3000000000 }}")
    written["padded"] = write_foreign_gguf(folder / "padded.gguf", "qwen2", chat_template="{{ 'x'.ljust(3000000000) }}")
    return written


@pytest.fixture(scope="module")
def engines(files):
    from quant.llama_engine import LlamaEngine

    loaded = {family: LlamaEngine.load(files[family]) for family in FAMILIES}
    yield loaded
    for engine in loaded.values():
        engine.close()


def template_ids(engine, messages: list[Message]) -> list[int]:
    """What the file's template gives, rendered by plain Jinja and tokenized whole with special parsing."""
    import jinja2

    environment = jinja2.Environment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    environment.globals["raise_exception"] = lambda message: (_ for _ in ()).throw(ValueError(message))
    vocab = engine.prompt_format.vocab
    text = environment.from_string(engine.info.chat_template).render(
        messages=[{"role": m.role, "content": m.content} for m in messages],
        add_generation_prompt=True,
        bos_token=vocab.token_text(vocab.bos_id),
        eos_token=vocab.token_text(vocab.eos_id),
    )
    ids = engine.llm.tokenize(text.encode(), add_bos=False, special=True)
    return ([vocab.bos_id] if vocab.add_bos and ids[:1] != [vocab.bos_id] else []) + ids


@pytest.mark.parametrize("family", INSTRUCT)
def test_the_prompt_is_exactly_what_the_files_template_gives(engines, family):
    engine = engines[family]
    messages = fold_system_message(CONVERSATION) if family == "gemma" else CONVERSATION  # Gemma refuses a system turn
    assert engine.fit(CONVERSATION, reserve=16).ids == template_ids(engine, messages)
    assert engine.fit(CONVERSATION[1:], reserve=16).ids == template_ids(engine, CONVERSATION[1:])


@pytest.mark.parametrize("family", INSTRUCT)
def test_typed_control_strings_stay_plain_text(engines, family):
    engine = engines[family]
    control_ids = set(engine.prompt_format.vocab.control_tokens.values())
    typed = "".join(FAMILIES[family].special_tokens) + "<|im_end|><|eot_id|><end_of_turn>"

    def controls(text: str) -> list[int]:
        ids = engine.fit([Message("user", text), Message("assistant", text), Message("user", text)], reserve=16).ids
        return [i for i in ids if i in control_ids]

    assert controls(typed) == controls("plain words")  # only the template's own markers are control tokens
    vocab = engine.prompt_format.vocab
    assert engine.prompt_format.decode_plain(vocab.encode(typed)) == typed


def forced(engine, monkeypatch, script: list[int]) -> None:
    """The engine's next tokens are `script`, in order (greedy over doctored logits)."""
    original, step = engine.evaluate, iter(range(10**6))

    def evaluate(start, ids):
        logits = original(start, ids)
        index = next(step)
        if index < len(script):
            logits[script[index]] = logits.max() + 1000
        return logits

    monkeypatch.setattr(engine, "evaluate", evaluate)


@pytest.mark.parametrize("family", INSTRUCT)
def test_a_reply_stops_at_the_familys_end_of_turn(engines, family, monkeypatch):
    engine = engines[family]
    vocab = engine.prompt_format.vocab
    words = vocab.encode("Fine.")
    forced(engine, monkeypatch, words + [FAMILIES[family].end_of_turn_id])
    pieces = list(engine.chat(CONVERSATION, SamplingParams(temperature=0, max_tokens=50)))
    assert pieces[-1].reason == "stop" and "".join(p.text for p in pieces[:-1]) == "Fine."


def test_a_model_without_a_template_gets_the_plain_fallback_and_stops_at_the_next_turn(engines, monkeypatch):
    engine = engines["plain"]
    fitted = engine.fit([Message("user", "Hi")], reserve=16)
    assert any("no chat template" in notice for notice in fitted.notices)
    assert engine.prompt_format.decode_plain(fitted.ids) == "User: Hi\nAssistant:"
    assert engine.prompt_format.stop_strings == PLAIN_STOP_STRINGS
    forced(engine, monkeypatch, engine.prompt_format.vocab.encode(" Fine.\nUser: and more"))
    events = list(engine.chat([Message("user", "Hi")], SamplingParams(temperature=0, max_tokens=50)))
    assert events[-1].reason == "stop" and "".join(e.text for e in events[:-1]) == " Fine."


def chatapp(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "chatapp", *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_chatapp_run_replies_with_a_foreign_model(files, family):
    result = chatapp(
        "run",
        "--model",
        str(files[family]),
        "--system",
        "Be brief.",
        "--max-tokens",
        "8",
        "--seed",
        "1",
        "--json",
        "Hello there",
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert (
        data["backend"] == "llama.cpp" and 1 <= data["completion_tokens"] <= 8 and data["reason"] in ("stop", "length")
    )
    assert data["context_length"] == data["trained_context_length"] == 512


@pytest.mark.parametrize("kind", list(BROKEN_KINDS) + ["hanging", "huge", "padded"])
def test_files_that_would_abort_or_hang_are_a_one_line_error(files, kind):
    started = time.monotonic()
    result = chatapp("run", "--model", str(files[kind]), "--max-tokens", "4", "Hello")
    assert result.returncode == 1 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("chatapp: error: ") and str(files[kind]) in lines[0], result.stderr
    assert time.monotonic() - started < 30
    if kind == "hanging":
        assert "took more than 1 s" in lines[0]
    if kind in ("huge", "padded"):
        assert "too big" in lines[0]


@pytest.mark.asyncio
@pytest.mark.parametrize("family", INSTRUCT)
async def test_the_tui_opens_a_foreign_model_and_streams_a_reply(files, family):
    from chatapp.history import HistoryStore
    from chatapp.tui.app import ChatApp
    from chatapp.tui.widgets.context_bar import ContextBar

    app = ChatApp(str(files[family]), store=HistoryStore())
    async with app.run_test() as pilot:
        await wait_until(pilot, lambda: app.engine is not None or app.load_error, timeout=60, what="the model to load")
        assert app.load_error is None and app.engine.name == "llama.cpp"
        await send(pilot, "Hello there")
        await wait_idle(pilot)
        stored = app.store.messages(app.chat.conversation.id)[-1]
        assert stored.role == "assistant" and stored.status in ("complete", "length") and stored.error is None
        assert reply_texts(app)[-1] == stored.content
        assert "/512 tokens" in str(app.query_one(ContextBar).render())
        app.engine.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", list(BROKEN_KINDS))
async def test_the_tui_shows_a_broken_file_as_one_line_and_keeps_running(files, kind):
    from chatapp.history import HistoryStore
    from chatapp.tui.app import ChatApp

    app = ChatApp(str(files[kind]), store=HistoryStore())
    async with app.run_test() as pilot:
        await wait_until(pilot, lambda: app.load_error is not None, timeout=60, what="the load to fail")
        assert str(files[kind]) in app.load_error and "\n" not in app.load_error
        await send(pilot, "Is anyone there?")
        await pilot.pause()
        assert app.is_running and app.chat.prompt.text == "Is anyone there?"  # nothing sent, nothing lost


def test_old_turns_are_dropped_so_that_a_strict_template_still_starts_with_a_user_turn(engines):
    engine = engines["gemma"]  # its template refuses a conversation that does not alternate from a user turn
    long_reply = "words " * 150
    history = [Message("user", "Hello"), Message("assistant", long_reply), Message("user", "And now?")]
    fitted = engine.fit(history, reserve=engine.context_length - 60)
    assert fitted.dropped_messages == 2 and fitted.ids == template_ids(engine, history[2:])
    fitted = engine.fit(history[:2], reserve=engine.context_length - 60)  # what the context bar asks after a long reply
    assert len(fitted.ids) <= 60 and fitted.truncated_tokens > 0  # the reply is cut rather than left alone
