"""Pilot tests of the settings panel: inline refusal of bad values with the reason, saving, "use for new
chats", and the theme."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.app import App
from textual.geometry import Region
from textual.widgets import Input, Select, Static

import chatapp.tui
from chatapp.history import HistoryStore
from chatapp.settings import ChatDefaults, check_field, load_settings, settings_path
from chatapp.tui.app import ChatApp
from chatapp.tui.screens.settings import ConversationSettings, SettingsScreen
from tests.helpers.fake_backend import FakeBackend
from tests.helpers.tui_app import make_app, send, wait_idle, wait_until

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


def error_text(screen, field: str) -> str:
    """The reason shown under a field, as it is on the screen (every line of it)."""
    message = screen.query_one(f"#{field}-error", Static)
    if not message.display:
        return ""
    lines = message.render_lines(Region(0, 0, *message.outer_size))
    return " ".join(line.text.strip() for line in lines).strip()


async def test_bad_values_are_refused_inline_with_the_allowed_range():
    app = make_app(FakeBackend())
    async with app.run_test(size=(120, 60)) as pilot:
        screen = await open_settings(pilot)
        await type_into(pilot, screen, "top_p", "1.5")
        assert error_text(screen, "top_p") == "top_p must be in (0, 1] (1 is off)"
        assert screen.query_one("#top_p", Input).has_class("invalid")
        await type_into(pilot, screen, "max_tokens", "lots")
        assert error_text(screen, "max_tokens").startswith("max_tokens must be an integer")
        await type_into(pilot, screen, "top_p", "0.5")
        assert error_text(screen, "top_p") == ""
        await pilot.press("ctrl+s")
        assert app.screen is screen  # max_tokens is still wrong
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


class SettingsHost(App):
    """The settings panel alone, with the app's stylesheet; what it is dismissed with is kept."""

    CSS_PATH = Path(chatapp.tui.__file__).parent / "chatapp.tcss"

    def __init__(self, chat: ChatDefaults | None = None):
        super().__init__()
        self.chat = chat or ChatDefaults()
        self.results: list[ConversationSettings | None] = []

    def on_mount(self) -> None:
        self.push_screen(
            SettingsScreen(ConversationSettings(self.chat, ""), [("mine", "/m.gguf")]), self.results.append
        )


async def test_every_wrong_field_says_why_in_the_words_of_the_settings_file():
    app = SettingsHost()
    async with app.run_test(size=(80, 40)) as pilot:
        await pilot.pause()
        screen = app.screen
        wrong = {
            "temperature": "hot",
            "top_p": "0",
            "top_k": "2.5",
            "min_p": "2",
            "repetition_penalty": "0",
            "max_tokens": "0",
            "seed": "-5",
        }
        for field, text in wrong.items():
            await type_into(pilot, screen, field, text)
        for field, text in wrong.items():
            assert error_text(screen, field) == check_field(field, text)[1], field  # all of it, wrapped at 80 columns
            assert screen.query_one(f"#{field}", Input).has_class("invalid")
        await type_into(pilot, screen, "top_k", "40")
        assert error_text(screen, "top_k") == "" and not screen.query_one("#top_k", Input).has_class("invalid")


async def test_save_names_the_fields_still_wrong_and_keeps_the_panel_open():
    app = SettingsHost()
    async with app.run_test(size=(80, 40)) as pilot:
        await pilot.pause()
        screen = app.screen
        await type_into(pilot, screen, "top_p", "1.5")
        await type_into(pilot, screen, "seed", "x")
        screen.query_one("#model", Select).focus()
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.screen is screen and app.results == []
        notice = list(app._notifications)[-1]
        assert notice.title == "Not saved: fix top_p, seed"
        assert check_field("top_p", "1.5")[1] in notice.message and check_field("seed", "x")[1] in notice.message
        assert app.focused is screen.query_one("#top_p", Input)  # the first one to fix
        screen.query_one("#save").press()
        await pilot.pause()
        assert app.screen is screen and app.results == []


async def test_a_stored_value_that_is_now_refused_is_marked_at_once():
    app = SettingsHost(ChatDefaults(top_k=-1))
    async with app.run_test(size=(80, 40)) as pilot:
        await pilot.pause()
        assert error_text(app.screen, "top_k").startswith("top_k must be an integer >= 0")


async def test_focus_starts_on_the_first_field():
    app = SettingsHost()
    async with app.run_test(size=(80, 40)) as pilot:
        await pilot.pause()
        assert app.focused is app.screen.query_one("#model", Select)


@pytest.mark.parametrize("how", ["key", "button"])
async def test_use_for_new_chats_saves_and_says_so(how):
    app = SettingsHost()
    async with app.run_test(size=(120, 60)) as pilot:
        await pilot.pause()
        await type_into(pilot, app.screen, "temperature", "0.3")
        if how == "key":
            await pilot.press("ctrl+n")
        else:
            app.screen.query_one("#save-as-default").scroll_visible(animate=False)
            await pilot.pause()
            await pilot.click("#save-as-default")
        await pilot.pause()
        [result] = app.results
        assert result.as_default and result.chat.temperature == 0.3 and result.model == ""


async def test_save_alone_is_for_this_conversation_only():
    app = SettingsHost()
    async with app.run_test(size=(120, 60)) as pilot:
        await pilot.pause()
        await pilot.press("ctrl+s")
        await pilot.pause()
        [result] = app.results
        assert not result.as_default and result.chat == ChatDefaults() and result.backend == "auto"


async def test_use_for_new_chats_reaches_the_settings_file_and_the_next_new_chat():
    path = settings_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('# my settings\n[app]\ntheme = "textual-dark"\n', encoding="utf-8")
    app = make_app(FakeBackend(), settings=load_settings())
    async with app.run_test(size=(120, 60)) as pilot:
        screen = await open_settings(pilot)
        await type_into(pilot, screen, "temperature", "0.3")
        await pilot.press("ctrl+n")
        await wait_until(pilot, lambda: app.screen is app.chat, what="the panel to close")
        assert app.chat.chat_settings().temperature == 0.3
        await send(pilot, "hi")
        await wait_idle(pilot)
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert app.chat.chat_settings().temperature == 0.3  # a new chat starts with the new defaults
    assert load_settings().chat.temperature == 0.3
    assert path.read_text(encoding="utf-8").startswith("# my settings")


@pytest.fixture
def session_threads():
    """The threads open_model uses are the process's; each test here leaves them as it found them."""
    from chatapp.models import opening

    before = opening.session_threads()
    yield opening
    opening.set_session_threads(before)


async def test_cpu_threads_are_saved_and_the_model_reopens_with_them(session_threads):
    path = settings_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("[model]\nthreads = 0\n", encoding="utf-8")
    opened: list[tuple[str, object]] = []

    def opener(spec, backend, device):
        threads = session_threads.session_threads()
        opened.append((spec, threads))
        engine = FakeBackend(model_name=spec)
        engine.threads = (threads.decode or 4, threads.batch or threads.decode or 4)  # as the engines report them
        return engine

    app = ChatApp(model_spec="fake", opener=opener, store=HistoryStore(), settings=load_settings())
    async with app.run_test(size=(120, 60)) as pilot:
        await wait_until(pilot, lambda: app.engine is not None, what="the model to load")
        assert app.sub_title == "fake · fake · 4/4 threads"
        screen = await open_settings(pilot)
        assert screen.query_one("#threads", Input).value == "0"
        await type_into(pilot, screen, "threads", "3")
        assert error_text(screen, "threads") == ""
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: not isinstance(app.screen, SettingsScreen))
        await wait_until(pilot, lambda: len(opened) == 2 and app.engine is not None, what="the model to reload")
        assert opened[-1] == ("fake", session_threads.Threads(3, None))
        assert app.sub_title == "fake · fake · 3/3 threads"
    assert load_settings().threads == 3
    assert "threads = 3" in path.read_text(encoding="utf-8")


@pytest.mark.parametrize("typed", ["-1", "1025", "two", "1.5"])
async def test_a_bad_thread_count_is_refused_inline_and_nothing_reloads(typed, session_threads):
    opened: list[str] = []
    app = ChatApp(
        model_spec="fake",
        opener=lambda spec, backend, device: opened.append(spec) or FakeBackend(),
        store=HistoryStore(),
    )
    async with app.run_test(size=(120, 60)) as pilot:
        await wait_until(pilot, lambda: app.engine is not None, what="the model to load")
        screen = await open_settings(pilot)
        await type_into(pilot, screen, "threads", typed)
        assert error_text(screen, "threads") == "threads must be a whole number from 0 (automatic) to 1024"
        assert screen.query_one("#threads", Input).has_class("invalid")
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.screen is screen  # not saved
        await pilot.press("escape")
        await pilot.pause()
    assert opened == ["fake"] and load_settings().threads == 0
