"""The app on the real torch engine (a tiny model trained for the test session)."""

from __future__ import annotations

import pytest

from tests.helpers.tui_app import make_app, send, wait_until

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]


@pytest.fixture(scope="module")
def tiny_engine(tiny_model_dir):
    from model.inference.torch_engine import TorchEngine

    return TorchEngine.load(tiny_model_dir, device="cpu")


async def test_a_real_reply_streams_with_its_numbers(tiny_engine):
    app = make_app(tiny_engine)
    async with app.run_test() as pilot:
        settings = dict(app.chat.conversation.settings)
        settings["chat"] = {**settings["chat"], "max_tokens": 12, "seed": 3}
        app.store.save_settings(app.chat.conversation.id, settings)
        app.chat.conversation = app.store.conversation(app.chat.conversation.id)
        await send(pilot, "Good morrow, my lord.")
        await wait_until(pilot, lambda: app.chat.job is None, timeout=120, what="the real reply")
        await pilot.pause()
        reply = app.store.messages(app.chat.conversation.id)[-1]
        assert reply.role == "assistant" and reply.status in ("complete", "length"), reply.error
        assert reply.stats["completion_tokens"] >= 1 and reply.stats["reason"] in ("stop", "length")
        assert "tokens" in str(app.query_one("#context").render())
        assert f"/{tiny_engine.context_length} tokens" in str(app.query_one("#context").render())


async def test_the_builtin_chat_model_loads_by_default_and_answers_in_character():
    from chatapp.history import HistoryStore
    from chatapp.tui.app import ChatApp

    app = ChatApp(store=HistoryStore())  # no engine given: the default model loads as it does for a user
    async with app.run_test() as pilot:
        await wait_until(
            pilot, lambda: app.engine is not None or app.load_error, timeout=120, what="the built-in model"
        )
        assert app.load_error is None and app.engine.model_name == "shakespeare-chat"
        decode, prompt = app.engine.threads
        assert app.sub_title == f"shakespeare-chat · torch · {decode}/{prompt} threads"  # CHATAPP_COMPILE=off
        settings = dict(app.chat.conversation.settings)
        settings["chat"] = {
            **settings.get("chat", {}),
            "system_prompt": "You are Hamlet, Prince of Denmark.",
            "seed": 0,
        }
        app.store.save_settings(app.chat.conversation.id, settings)
        app.chat.conversation = app.store.conversation(app.chat.conversation.id)
        await send(pilot, "How do you like the court, my lord?")
        await wait_until(pilot, lambda: app.chat.job is None, timeout=120, what="the reply")
        reply = app.store.messages(app.chat.conversation.id)[-1]
        assert reply.role == "assistant" and reply.status == "complete", reply.error
        assert reply.stats["reason"] == "stop" and reply.content.strip() and "<|" not in reply.content
