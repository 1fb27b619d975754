"""Pilot tests of the settings panel: inline refusal of bad values, saving, and the theme."""

from __future__ import annotations

import pytest
from textual.widgets import Button, Input, Label

from chatapp.settings import load_settings, settings_path
from chatapp.tui.screens.settings import SettingsScreen
from tests.fake_backend import FakeBackend
from tests.tui_helpers import make_app, send, wait_idle, wait_until

pytestmark = pytest.mark.asyncio


async def open_settings(pilot):
    await pilot.press("f2")
    await wait_until(pilot, lambda: isinstance(pilot.app.screen, SettingsScreen))
    return pilot.app.screen


async def type_into(pilot, screen, field: str, text: str):
    box = screen.query_one(f"#{field}", Input)
    box.value = ""
    box.focus()
    await pilot.press(*text)
    await pilot.pause()


async def test_bad_values_are_refused_inline_with_the_allowed_range():
    app = make_app(FakeBackend())
    async with app.run_test(size=(120, 60)) as pilot:
        screen = await open_settings(pilot)
        await type_into(pilot, screen, "top_p", "1.5")
        error = str(screen.query_one("#top_p-error", Label).render())
        assert "top_p must be in (0, 1]" in error
        assert screen.query_one("#top_p", Input).has_class("invalid")
        assert screen.query_one("#save", Button).disabled
        await type_into(pilot, screen, "max_tokens", "lots")
        assert "max_tokens must be an integer" in str(screen.query_one("#max_tokens-error", Label).render())
        await type_into(pilot, screen, "top_p", "0.5")
        assert str(screen.query_one("#top_p-error", Label).render()) == ""
        assert screen.query_one("#save", Button).disabled  # max_tokens is still wrong
        await pilot.press("escape")
        await pilot.pause()
        assert app.chat.conversation.settings["chat"]["top_p"] == 0.95


async def test_saved_settings_belong_to_the_conversation_and_reach_the_engine():
    engine = FakeBackend()
    app = make_app(engine)
    async with app.run_test(size=(120, 60)) as pilot:
        screen = await open_settings(pilot)
        await type_into(pilot, screen, "temperature", "0")
        await type_into(pilot, screen, "seed", "7")
        screen.query_one("#system_prompt").text = "You are Hamlet."
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: not isinstance(app.screen, SettingsScreen))
        assert app.chat.conversation.settings["chat"]["temperature"] == 0.0
        await send(pilot, "who are you?")
        await wait_idle(pilot)
        call = engine.calls[-1]
        assert (call["params"].temperature, call["params"].seed) == (0.0, 7)
        assert call["messages"][0].role == "system" and call["messages"][0].content == "You are Hamlet."
        await pilot.press("ctrl+n")
        assert app.chat.conversation.settings["chat"]["temperature"] == 0.8  # new conversations start from the file


async def test_new_conversations_take_their_defaults_from_the_settings_file():
    path = settings_path()
    path.parent.mkdir(parents=True)
    path.write_text('[chat]\ntemperature = 0.2\nsystem_prompt = "Speak in verse."\ntop_k = -3\n')
    engine = FakeBackend()
    app = make_app(engine, settings=load_settings())
    async with app.run_test() as pilot:
        assert any("top_k must be an integer >= 0" in n.message for n in app._notifications)
        await send(pilot, "hi")
        await wait_idle(pilot)
        assert engine.calls[-1]["params"].temperature == 0.2
        assert engine.calls[-1]["messages"][0].content == "Speak in verse."


async def test_the_theme_is_remembered():
    app = make_app(FakeBackend())
    async with app.run_test() as pilot:
        app.theme = "nord"
        await pilot.pause()
    assert load_settings().theme == "nord"
    again = make_app(FakeBackend())
    async with again.run_test() as pilot:
        assert again.theme == "nord"
