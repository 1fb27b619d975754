"""Pilot tests of chatting against the scripted fake engine."""

from __future__ import annotations

import io

import pytest
from rich.console import Console
from textual.widgets._markdown import MarkdownParagraph

from chatapp.history import HistoryStore
from chatapp.tui.widgets.context_bar import ContextBar
from chatapp.tui.widgets.messages import AssistantMessage, FinishedReply, UserMessage
from tests.helpers.fake_backend import FakeBackend
from tests.helpers.tui_app import make_app, reply_texts, send, wait_idle, wait_until

pytestmark = pytest.mark.asyncio


async def test_a_reply_streams_in_and_is_saved():
    engine = FakeBackend(replies=[["**Good", " morrow**", ", sir."]])
    app = make_app(engine)
    async with app.run_test() as pilot:
        await send(pilot, "Hello\nthere")
        await wait_idle(pilot)
        assert [w.content for w in app.query(UserMessage)] == ["Hello\nthere"]
        assert reply_texts(app) == ["**Good morrow**, sir."]
        reply = app.query_one(AssistantMessage)
        assert shown_reply_text(reply).startswith("Good morrow, sir.")
        assert "3 tokens" in reply.footer_text() and "finish: stop" in reply.footer_text()
        assert app.chat.prompt.text == ""
        stored = app.store.messages(app.chat.conversation.id)
        assert [(m.role, m.content, m.status) for m in stored] == [
            ("user", "Hello\nthere", "complete"),
            ("assistant", "**Good morrow**, sir.", "complete"),
        ]
        assert engine.calls[0]["messages"][-1].content == "Hello\nthere"
        assert "context" in str(app.query_one(ContextBar).render())


async def test_verse_keeps_its_line_breaks_while_streaming_and_after():
    """Markdown joins single newlines into one paragraph; a reply in verse must keep its lines."""
    engine = FakeBackend(replies=[["To be, or not to be:", "\nthat is", " the question."]], hold_after=2)
    app = make_app(engine)
    async with app.run_test() as pilot:
        await send(pilot, "Speak")
        await wait_until(pilot, engine.holding.is_set)
        await pilot.pause()
        assert paragraph_texts(app) == ["To be, or not to be:\nthat is"]
        engine.release()
        await wait_idle(pilot)
        assert shown_reply_text(app.query_one(AssistantMessage)).splitlines() == [
            "To be, or not to be:",
            "that is the question.",
        ]


def paragraph_texts(app) -> list[str]:
    reply = app.query_one(AssistantMessage)
    return [str(p._content) for p in reply.query(MarkdownParagraph)]


def shown_reply_text(reply: AssistantMessage) -> str:
    """A finished reply as the screen shows it, without styles."""
    console = Console(width=60, record=True, file=io.StringIO())
    console.print(reply.query_one(FinishedReply).markdown)
    return "\n".join(line.rstrip() for line in console.export_text().splitlines()).strip()


@pytest.fixture
def save_every_piece(monkeypatch):
    monkeypatch.setattr("chatapp.tui.generation.SAVE_INTERVAL_S", 0.0)


async def test_esc_stops_a_reply_mid_stream_and_keeps_what_came(save_every_piece):
    engine = FakeBackend(replies=[["one", " two", " three", " four"]], hold_after=2)
    app = make_app(engine)
    async with app.run_test() as pilot:
        await send(pilot, "count")
        await wait_until(pilot, engine.holding.is_set, what="the stream to be held")
        await wait_until(pilot, lambda: reply_texts(app) == ["one two"], what="two pieces on screen")
        stored = app.store.messages(app.chat.conversation.id)[-1]
        assert (stored.content, stored.status) == ("one two", "streaming")  # saved as it streams
        await pilot.press("escape")
        await wait_idle(pilot)
        stored = app.store.messages(app.chat.conversation.id)[-1]
        assert (stored.content, stored.status) == ("one two", "stopped")
        assert engine.cancelled == 1
        assert "stopped" in app.query_one(AssistantMessage).footer_text()


async def test_an_engine_error_mid_reply_is_shown_and_the_app_keeps_running():
    engine = FakeBackend(replies=[["half", " a reply"], ["fine"]], fail_after=1)
    app = make_app(engine)
    async with app.run_test() as pilot:
        await send(pilot, "break")
        await wait_idle(pilot)
        stored = app.store.messages(app.chat.conversation.id)[-1]
        assert (stored.content, stored.status) == ("half", "error")
        assert "broke down" in stored.error
        assert any("broke down" in n.message for n in app._notifications)
        assert "error" in app.query_one(AssistantMessage).footer_text()
        engine.fail_after = None
        await send(pilot, "again")
        await wait_idle(pilot)
        assert reply_texts(app)[-1] == "fine"
        # the failed reply is not sent back to the engine
        assert [m.content for m in engine.calls[-1]["messages"]] == ["break", "again"]


async def test_a_model_that_fails_to_load_is_reported_and_typed_text_is_kept():
    def broken_opener(spec, backend, device):
        raise ValueError("no model named 'nope'")

    app = make_app(engine=None, model_spec="nope", opener=broken_opener)
    app.engine = None
    async with app.run_test() as pilot:
        await wait_until(pilot, lambda: app.load_error is not None, what="the load error")
        banner = str(app.query_one("#banner").render())
        assert "could not be loaded" in banner and "nope" in banner
        await send(pilot, "are you there?")
        assert app.chat.prompt.text == "are you there?"
        assert app.store.messages(app.chat.conversation.id) == []
        assert app.is_running


async def test_a_model_loads_in_the_background_then_chats():
    engine = FakeBackend(replies=[["loaded"]])
    app = make_app(engine=None, model_spec="fake", opener=lambda spec, backend, device: engine)
    app.engine = None
    async with app.run_test() as pilot:
        await wait_until(pilot, lambda: app.engine is engine, what="the model to load")
        await send(pilot, "hi")
        await wait_idle(pilot)
        assert reply_texts(app) == ["loaded"]


async def test_regenerate_replaces_the_last_reply():
    engine = FakeBackend(replies=[["first"], ["second"]])
    app = make_app(engine)
    async with app.run_test() as pilot:
        await send(pilot, "hi")
        await wait_idle(pilot)
        await pilot.press("ctrl+r")
        await wait_idle(pilot)
        assert reply_texts(app) == ["second"]
        assert [m.content for m in app.store.messages(app.chat.conversation.id)] == ["hi", "second"]
        assert [m.content for m in engine.calls[1]["messages"]] == ["hi"]


async def test_continue_a_reply_that_hit_its_length_limit():
    engine = FakeBackend(replies=[["To", " be", " or", " not"], [" to", " be"]])
    app = make_app(engine)
    async with app.run_test() as pilot:
        settings = dict(app.chat.conversation.settings)
        settings["chat"] = {**settings["chat"], "max_tokens": 2}
        app.store.save_settings(app.chat.conversation.id, settings)
        app.chat.conversation = app.store.conversation(app.chat.conversation.id)
        await send(pilot, "Hamlet")
        await wait_idle(pilot)
        assert app.store.messages(app.chat.conversation.id)[-1].status == "length"
        assert "length limit" in app.query_one(AssistantMessage).footer_text()
        await pilot.press("ctrl+g")
        await wait_idle(pilot)
        assert engine.calls[-1]["continue_last"] is True
        assert engine.calls[-1]["messages"][-1].content == "To be"
        assert reply_texts(app) == ["To be to be"]
        assert app.store.messages(app.chat.conversation.id)[-1].content == "To be to be"


async def test_up_on_an_empty_input_recalls_earlier_prompts():
    app = make_app(FakeBackend())
    async with app.run_test() as pilot:
        for prompt in ("first", "second"):
            await send(pilot, prompt)
            await wait_idle(pilot)
        app.chat.prompt.focus()
        await pilot.press("up")
        assert app.chat.prompt.text == "second"
        await pilot.press("up")
        assert app.chat.prompt.text == "first"
        await pilot.press("down")
        assert app.chat.prompt.text == "second"


async def test_shift_enter_and_ctrl_j_add_a_line_instead_of_sending():
    app = make_app(FakeBackend())
    async with app.run_test() as pilot:
        app.chat.prompt.focus()
        await pilot.press("a", "ctrl+j", "b", "shift+enter", "c")
        assert app.chat.prompt.text == "a\nb\nc"
        assert app.store.messages(app.chat.conversation.id) == []


async def test_sending_while_a_reply_streams_is_refused_and_the_text_kept():
    engine = FakeBackend(replies=[["slow", " reply"]], hold_after=1)
    app = make_app(engine)
    async with app.run_test() as pilot:
        await send(pilot, "one")
        await wait_until(pilot, engine.holding.is_set)
        await send(pilot, "two")
        assert app.chat.prompt.text == "two"
        assert any("still streaming" in n.message for n in app._notifications)
        engine.release()
        await wait_idle(pilot)
        assert reply_texts(app) == ["slow reply"]


async def test_switching_conversations_mid_reply_keeps_the_reply_in_its_own(save_every_piece):
    engine = FakeBackend(replies=[["a", "b", "c", "d"]], hold_after=2)
    app = make_app(engine)
    async with app.run_test() as pilot:
        await send(pilot, "first conversation")
        first = app.chat.conversation.id
        await wait_until(pilot, engine.holding.is_set)
        await pilot.press("ctrl+n")
        await pilot.pause()
        second = app.chat.conversation.id
        assert second != first and not app.query(AssistantMessage)
        engine.release()
        await wait_idle(pilot)
        assert not app.query(AssistantMessage)  # nothing leaked into the new conversation
        assert app.store.messages(second) == []
        assert [(m.content, m.status) for m in app.store.messages(first)][-1] == ("abcd", "complete")
        await app.chat.open_conversation(first)
        await pilot.pause()
        assert reply_texts(app) == ["abcd"]


async def test_switching_back_mid_reply_shows_the_reply_still_streaming(save_every_piece):
    engine = FakeBackend(replies=[["a", "b", "c", "d"]], hold_after=2)
    app = make_app(engine)
    async with app.run_test() as pilot:
        await send(pilot, "hi")
        first = app.chat.conversation.id
        await wait_until(pilot, engine.holding.is_set)
        await pilot.press("ctrl+n")
        await app.chat.open_conversation(first)
        await pilot.pause()
        assert reply_texts(app) == ["ab"]
        engine.release()
        await wait_idle(pilot)
        assert reply_texts(app) == ["abcd"]


async def test_quitting_mid_reply_cancels_generation_cleanly(save_every_piece):
    engine = FakeBackend(replies=[["a", "b", "c"]], hold_after=1)
    store = HistoryStore()
    app = make_app(engine, store=store)
    async with app.run_test() as pilot:
        await send(pilot, "hi")
        conversation = app.chat.conversation.id
        await wait_until(pilot, engine.holding.is_set)
        await pilot.press("ctrl+q")
        await wait_until(pilot, lambda: not app.is_running, what="the app to exit")
    assert engine.cancelled >= 1
    assert [(m.content, m.status) for m in store.messages(conversation)][-1] == ("a", "stopped")


async def test_the_context_bar_shows_use_and_the_turns_that_no_longer_fit():
    engine = FakeBackend(context_length=120, replies=[["x" * 30]] * 4)
    app = make_app(engine)
    async with app.run_test() as pilot:
        settings = dict(app.chat.conversation.settings)
        settings["chat"] = {**settings["chat"], "max_tokens": 20}
        app.store.save_settings(app.chat.conversation.id, settings)
        app.chat.conversation = app.store.conversation(app.chat.conversation.id)
        for index in range(3):
            await send(pilot, f"message number {index}")
            await wait_idle(pilot)
        bar = app.query_one(ContextBar)
        text = str(bar.render())
        assert "/120" in text and "3 dropped" in text
        assert bar.has_class("overflowing")
        widgets = app.chat.log_view.message_widgets()
        assert widgets[0].has_class("out-of-context")
        assert not widgets[-1].has_class("out-of-context")
