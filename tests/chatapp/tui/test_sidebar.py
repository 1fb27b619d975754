"""Pilot tests of the conversation sidebar: new, rename, delete with confirmation, filter."""

from __future__ import annotations

import pytest

from chatapp.tui.screens.dialogs import ConfirmScreen, TextPromptScreen
from chatapp.tui.widgets.sidebar import ConversationSidebar
from tests.helpers.fake_backend import FakeBackend
from tests.helpers.tui_app import make_app, reply_texts, send, wait_idle, wait_until

pytestmark = pytest.mark.asyncio


def titles(app) -> list[str]:
    return app.query_one(ConversationSidebar).titles()


async def two_conversations(pilot):
    await send(pilot, "About Hamlet")
    await wait_idle(pilot)
    await pilot.press("ctrl+n")
    await send(pilot, "About Lear")
    await wait_idle(pilot)


async def test_new_conversations_are_listed_newest_first_with_their_titles():
    app = make_app(FakeBackend())
    async with app.run_test() as pilot:
        await two_conversations(pilot)
        assert titles(app) == ["About Lear", "About Hamlet"]
        await pilot.press("ctrl+n", "ctrl+n")  # an empty conversation is reused, not piled up
        assert len(app.store.conversations()) == 3


async def test_selecting_a_conversation_opens_it():
    app = make_app(FakeBackend(replies=[["on Hamlet"], ["on Lear"]]))
    async with app.run_test() as pilot:
        await two_conversations(pilot)
        options = app.query_one("#conversations")
        options.focus()
        options.highlighted = 1
        await pilot.press("enter")
        await wait_until(pilot, lambda: reply_texts(app) == ["on Hamlet"])
        assert app.chat.conversation.title == "About Hamlet"


async def test_rename():
    app = make_app(FakeBackend())
    async with app.run_test() as pilot:
        await send(pilot, "hi")
        await wait_idle(pilot)
        await pilot.press("ctrl+t")
        await wait_until(pilot, lambda: isinstance(app.screen, TextPromptScreen))
        app.screen.query_one("#answer").value = ""
        await pilot.press(*"Greetings", "enter")
        await pilot.pause()
        assert titles(app) == ["Greetings"]
        assert app.store.conversation(app.chat.conversation.id).title == "Greetings"


async def test_delete_asks_first_and_cancel_keeps_the_conversation():
    app = make_app(FakeBackend())
    async with app.run_test() as pilot:
        await two_conversations(pilot)
        await pilot.press("f8")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("escape")
        await pilot.pause()
        assert len(app.store.conversations()) == 2
        await pilot.press("f8")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.click("#yes")
        await wait_until(pilot, lambda: titles(app) == ["About Hamlet"])
        assert app.chat.conversation.title == "About Hamlet"


async def test_filter_narrows_the_list():
    app = make_app(FakeBackend(replies=[["The Dane"], ["The king"]]))
    async with app.run_test() as pilot:
        await two_conversations(pilot)
        await pilot.press("ctrl+f")
        assert app.focused.id == "filter"
        await pilot.press(*"dane")
        await wait_until(pilot, lambda: titles(app) == ["About Hamlet"])
        await pilot.press(*["backspace"] * 4)
        await wait_until(pilot, lambda: len(titles(app)) == 2)


async def test_the_sidebar_can_be_hidden():
    app = make_app(FakeBackend())
    async with app.run_test() as pilot:
        await pilot.press("ctrl+b")
        assert not app.query_one(ConversationSidebar).display
        await pilot.press("ctrl+b")
        assert app.query_one(ConversationSidebar).display
