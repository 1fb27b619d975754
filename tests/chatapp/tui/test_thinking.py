"""A reasoning model's thinking in the TUI (Pilot, on the scripted engine): it streams into a dimmed
block above the answer, collapsed to "thinking… N tokens, S s" until F5 or a click opens it; the
history keeps it apart from the answer and the next turn sends it apart; the settings panel's
thinking switch is offered where the model's template has one, greyed out with the reason where not."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import Select

from chatapp.tui.screens.settings import SettingsScreen
from chatapp.tui.widgets.messages import AssistantMessage, ThinkingBlock
from model.inference.backend import THINKING
from model.text.chat_format import Message
from model.text.reasoning import detect_format
from tests.helpers.fake_backend import FakeBackend
from tests.helpers.tui_app import make_app, send, wait_idle, wait_until

pytestmark = pytest.mark.asyncio

THOUGHT = [(THINKING, "Two and"), (THINKING, " two."), "It is", " 4."]
QWEN3 = (Path(__file__).parents[2] / "data" / "chat_templates" / "Qwen-Qwen3-0.6B.jinja").read_text()


def block_text(widget: AssistantMessage) -> str:
    block = widget.query_one(ThinkingBlock)
    return str(block.render())


async def test_the_thinking_streams_apart_collapsed_and_opens_with_f5_and_a_click():
    fake = FakeBackend(replies=[THOUGHT, ["Yes."]])
    app = make_app(fake)
    async with app.run_test(size=(100, 40)) as pilot:
        await send(pilot, "2+2?")
        await wait_idle(pilot)
        reply = app.query(AssistantMessage).last()
        assert reply.content == "It is 4." and reply.thinking == "Two and two."
        block = reply.query_one(ThinkingBlock)
        assert block.display and not block.expanded
        assert block_text(reply) == "▸ thinking… 2 tokens, 0.0 s"
        await pilot.press("f5")
        assert block.expanded and block_text(reply) == "▾ thinking… 2 tokens, 0.0 s\nTwo and two."
        assert await pilot.click(block)
        await pilot.pause()
        assert not block.expanded

        stored = app.chat.store.messages(app.chat.current.id)[-1]
        assert (stored.content, stored.reasoning) == ("It is 4.", "Two and two.")
        assert stored.stats is not None and stored.stats["thinking_tokens"] == 2

        await send(pilot, "Sure?")
        await wait_idle(pilot)
        assert fake.calls[-1]["messages"][-2] == Message("assistant", "It is 4.", reasoning="Two and two.")
        plain = app.query(AssistantMessage).last()
        assert not plain.query_one(ThinkingBlock).display  # a reply without thinking shows no block


async def test_a_reply_read_back_from_the_history_shows_its_thinking():
    fake = FakeBackend(replies=[THOUGHT])
    app = make_app(fake)
    async with app.run_test(size=(100, 40)) as pilot:
        await send(pilot, "2+2?")
        await wait_idle(pilot)
        conversation = app.chat.current.id
        store = app.chat.store
    again = make_app(FakeBackend(), store=store)
    async with again.run_test(size=(100, 40)) as pilot:
        await wait_until(pilot, lambda: bool(again.query(AssistantMessage)), what="the reply")
        assert again.chat.current.id == conversation
        reply = again.query(AssistantMessage).last()
        assert reply.thinking == "Two and two." and reply.query_one(ThinkingBlock).display


async def test_the_thinking_setting_is_greyed_out_with_the_reason_where_the_template_has_no_switch():
    app = make_app(FakeBackend())
    async with app.run_test(size=(120, 60)) as pilot:
        await pilot.press("f2")
        await wait_until(pilot, lambda: isinstance(app.screen, SettingsScreen))
        assert app.screen.query_one("#thinking", Select).disabled
        label = str(app.screen.query_one("#thinking-label").render())
        assert "does not think apart" in label


async def test_the_thinking_setting_reaches_the_engine_where_the_template_has_a_switch():
    fake = FakeBackend(replies=[["Hi."]])
    fake.reasoning_format = detect_format(QWEN3)
    app = make_app(fake)
    async with app.run_test(size=(120, 60)) as pilot:
        await pilot.press("f2")
        await wait_until(pilot, lambda: isinstance(app.screen, SettingsScreen))
        select = app.screen.query_one("#thinking", Select)
        assert not select.disabled and "enable_thinking" in str(app.screen.query_one("#thinking-label").render())
        select.value = "off"
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: not isinstance(app.screen, SettingsScreen))
        assert app.chat.conversation.settings["chat"]["thinking"] == "off"
        await send(pilot, "hi")
        await wait_idle(pilot)
        assert fake.calls[-1]["params"].thinking is False


async def test_the_context_bar_counts_the_prompt_the_reply_gets_with_thinking_off(tmp_path):
    """Qwen3's template writes an empty think block into the prompt when thinking is off: the context
    bar must count the prompt with the switch the reply will use, not the last reply's."""
    pytest.importorskip("llama_cpp")
    import numpy as np

    from chatapp.tui.widgets.context_bar import ContextBar
    from model.inference.sampling import SamplingParams
    from quant.llama_engine import LlamaEngine
    from tests.helpers.foreign_gguf import write_foreign_gguf

    engine = LlamaEngine.load(write_foreign_gguf(tmp_path / "qwen3.gguf", "qwen3"), n_threads=1, state_cache_mb=0)
    vocab = engine.prompt_format.vocab
    end = vocab.control_tokens["<|im_end|>"]
    script = vocab.encode("Hello.")

    def evaluate(start: int, ids: list[int]) -> np.ndarray:  # random weights: the reply is scripted
        logits = np.zeros(engine.n_vocab, dtype=np.float32)
        logits[script.pop(0) if script else end] = 100.0
        return logits

    engine.evaluate = evaluate
    app = make_app(engine)
    counted: list[int] = []  # the bar's count while a reply is under way (set as it starts)
    try:
        async with app.run_test(size=(120, 60)) as pilot:
            await send(pilot, "hi")  # thinking: the model's default (no think block in the prompt)
            await wait_idle(pilot)
            await pilot.press("f2")
            await wait_until(pilot, lambda: isinstance(app.screen, SettingsScreen))
            app.screen.query_one("#thinking", Select).value = "off"
            await pilot.press("ctrl+s")
            await wait_until(pilot, lambda: not isinstance(app.screen, SettingsScreen))
            bar = app.chat.query_one(ContextBar)
            show = bar.show

            def recording_show(prompt_tokens, *args, **kwargs):
                if app.chat.job is not None:
                    counted.append(prompt_tokens)
                return show(prompt_tokens, *args, **kwargs)

            bar.show = recording_show
            script[:] = vocab.encode("Fine.")
            await send(pilot, "and now?")
            await wait_idle(pilot)
            stored = app.chat.store.messages(app.chat.current.id)[-1]
            assert stored.stats is not None
            assert counted and counted[0] == stored.stats["prompt_tokens"]
            messages, _, _ = app.chat.model_view()
            assert messages[-1].content == "Fine."  # the reply; the prompt it got is the rest
            off = engine.fit(messages[:-1], 16, params=SamplingParams(thinking=False)).size
            default = engine.fit(messages[:-1], 16, params=SamplingParams()).size
            assert off == counted[0] > default  # the empty think block is counted
    finally:
        engine.close()


async def test_a_reply_stopped_inside_its_thinking_can_be_continued(tmp_path):
    """A reply stopped before any answer (thinking only) is still sent to the model, so Ctrl+G continues it."""
    from chatapp.history import HistoryStore, Status

    store = HistoryStore(tmp_path / "h.sqlite3")
    conversation = store.create_conversation({})
    store.add_message(conversation.id, "user", "2+2?")
    store.add_message(conversation.id, "assistant", "", status=Status.STOPPED, reasoning="Two and")
    fake = FakeBackend(replies=[[(THINKING, " two."), "It is 4."]])
    app = make_app(fake, store=store)
    async with app.run_test(size=(100, 40)) as pilot:
        await wait_until(pilot, lambda: app.query(AssistantMessage), what="the conversation")
        await pilot.press("ctrl+g")
        await wait_until(pilot, lambda: fake.calls, what="the continuation to start")
        await wait_idle(pilot)
        call = fake.calls[-1]
        assert call["continue_last"] and call["messages"][-1] == Message("assistant", "", reasoning="Two and")
        reply = app.query(AssistantMessage).last()
        assert (reply.thinking, reply.content) == ("Two and two.", "It is 4.")
