"""Pilot tests of help, command palette, copy, export, the sampling inspector and the model picker."""

from __future__ import annotations

import json

import pytest
from textual.command import CommandPalette
from textual.widgets import DataTable, Label, Markdown, OptionList

from chatapp.paths import data_dir
from chatapp.tui.keys import APP_KEYS
from chatapp.tui.screens.help import HelpScreen
from chatapp.tui.screens.inspector import InspectorScreen
from chatapp.tui.screens.models import ModelPickerScreen
from chatapp.tui.widgets.messages import AssistantMessage, UserMessage
from tests.helpers.fake_backend import FakeBackend
from tests.helpers.tui_app import make_app, send, wait_idle, wait_until

pytestmark = pytest.mark.asyncio

CODE_REPLY = ["Here:\n\n```python\n", "print('to be')\n", "```\n", "Done."]


async def test_the_help_screen_lists_every_key():
    app = make_app(FakeBackend())
    async with app.run_test() as pilot:
        await pilot.press("f1")
        await wait_until(pilot, lambda: isinstance(app.screen, HelpScreen))
        source = app.screen.query_one(Markdown).source
        for key, _, description, _ in APP_KEYS:
            assert f"`{key}`" in source and description in source
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)


async def test_every_action_is_in_the_command_palette():
    app = make_app(FakeBackend())
    async with app.run_test() as pilot:
        titles = {command.title for command in app.get_system_commands(app.screen)}
        assert {description for _, _, description, _ in APP_KEYS} <= titles
        await pilot.press("ctrl+p")
        await wait_until(pilot, lambda: isinstance(app.screen, CommandPalette))
        await pilot.press(*"Help")
        await wait_until(
            pilot, lambda: app.screen.query(OptionList) and app.screen.query_one(OptionList).option_count > 0
        )
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, HelpScreen))


async def test_app_keys_do_nothing_behind_a_dialog():
    app = make_app(FakeBackend())
    async with app.run_test() as pilot:
        await send(pilot, "hi")
        await wait_idle(pilot)  # not an empty chat, so that Ctrl+N would open a new one
        opened = app.chat.conversation.id
        await pilot.press("f1")
        await wait_until(pilot, lambda: isinstance(app.screen, HelpScreen))
        await pilot.press("ctrl+n")
        await run_from_the_palette(pilot, "New chat")  # the palette opens over the dialog too
        await run_from_the_palette(pilot, "Help")
        assert app.screen_stack == [app.chat, app.screen] and isinstance(app.screen, HelpScreen)
        assert len(app.store.conversations()) == 1 and app.chat.conversation.id == opened
        await pilot.press("escape")
        await pilot.press("ctrl+n")
        assert len(app.store.conversations()) == 2  # the same key, with the dialog closed


async def run_from_the_palette(pilot, title: str) -> None:
    app = pilot.app
    await pilot.press("ctrl+p")
    await wait_until(pilot, lambda: isinstance(app.screen, CommandPalette))
    await pilot.press(*title)
    await wait_until(pilot, lambda: app.screen.query(OptionList) and app.screen.query_one(OptionList).option_count > 0)
    await pilot.press("enter")
    await wait_until(pilot, lambda: not isinstance(app.screen, CommandPalette))
    await pilot.pause()
    await pilot.pause()


async def test_copy_a_message_and_a_code_block():
    app = make_app(FakeBackend(replies=[CODE_REPLY]))
    async with app.run_test() as pilot:
        await send(pilot, "some code")
        await wait_idle(pilot)
        await pilot.press("f9")
        assert app.clipboard == "".join(CODE_REPLY)
        await pilot.press("shift+f9")
        assert app.clipboard == "print('to be')"
        app.query_one(UserMessage).focus()
        await pilot.press("f9")
        assert app.clipboard == "some code"


async def test_export_writes_markdown_and_json():
    app = make_app(FakeBackend(replies=[["Good morrow."]]))
    async with app.run_test() as pilot:
        await send(pilot, "Hello")
        await wait_idle(pilot)
        await pilot.press("ctrl+s")
    files = sorted((data_dir() / "exports").iterdir())
    assert [f.suffix for f in files] == [".json", ".md"]
    markdown = files[1].read_text()
    assert (
        "# Hello" in markdown and "## You\n\nHello" in markdown and "## fake-model\n\nGood morrow." in markdown
    )  # the model that wrote it
    data = json.loads(files[0].read_text())
    assert [(m["role"], m["content"]) for m in data["messages"]] == [("user", "Hello"), ("assistant", "Good morrow.")]


async def test_the_inspector_shows_candidates_cut_and_drawn():
    app = make_app(FakeBackend(replies=[["To", " be"]]))
    async with app.run_test(size=(120, 40)) as pilot:
        await send(pilot, "Hamlet")
        await wait_idle(pilot)
        app.query_one(AssistantMessage).focus()
        await pilot.press("f3")
        await wait_until(pilot, lambda: isinstance(app.screen, InspectorScreen))
        screen = app.screen
        assert screen.query_one("#tokens", OptionList).option_count == 2
        table = screen.query_one(DataTable)
        rows = [[str(cell) for cell in table.get_row_at(i)] for i in range(table.row_count)]
        assert rows[0] == ["'To'", "0.600", "0.750", "drawn"]
        assert rows[2][-1] == "cut"
        await pilot.press("down")
        await pilot.pause()
        assert str(table.get_row_at(0)[0]) == "' be'"


async def test_the_inspector_shows_the_thinking_tokens_marked_as_thinking():
    from chatapp.tui.screens.inspector import token_label
    from model.inference.backend import THINKING

    app = make_app(FakeBackend(replies=[[(THINKING, "Hmm"), (THINKING, " yes."), "To", " be"]]))
    async with app.run_test(size=(120, 40)) as pilot:
        await send(pilot, "Hamlet")
        await wait_idle(pilot)
        app.query_one(AssistantMessage).focus()
        await pilot.press("f3")
        await wait_until(pilot, lambda: isinstance(app.screen, InspectorScreen))
        screen = app.screen
        assert "4 tokens (2 thinking)" in str(screen.query_one(".title", Label).render())
        tokens = screen.query_one("#tokens", OptionList)
        prompts = [tokens.get_option_at_index(i).prompt for i in range(tokens.option_count)]
        assert [str(p) for p in prompts] == [
            "   1  'Hmm'  · thinking",
            "   2  ' yes.'  · thinking",
            "   3  'To'",
            "   4  ' be'",
        ]
        assert all("dim" in str(p.style) for p in prompts[:2]) and not any(str(p.style) for p in prompts[2:])
        assert "(thinking)" in str(screen.query_one("#step-summary", Label).render())
        await pilot.press("down", "down")
        await pilot.pause()
        assert "(thinking)" not in str(screen.query_one("#step-summary", Label).render())
        assert str(screen.query_one(DataTable).get_row_at(0)[0]) == "'To'"
        # read back from the history: the marks are kept
        store = app.chat.store
        steps = store.inspection(store.messages(app.chat.current.id)[-1].id)
        assert steps is not None and [bool(s.get("thinking")) for s in steps] == [True, True, False, False]
        assert token_label(0, steps[0]).endswith("· thinking")


async def test_the_inspector_says_when_there_is_no_token_data():
    engine = FakeBackend()
    engine.supports_inspection = False
    app = make_app(engine)
    async with app.run_test() as pilot:
        await send(pilot, "hi")
        await wait_idle(pilot)
        await pilot.press("f3")
        assert not isinstance(app.screen, InspectorScreen)
        assert any("No token data" in n.message for n in app._notifications)


async def test_the_model_picker_lists_models_and_adds_a_gguf_by_path(tmp_path):
    gguf = tmp_path / "mine.gguf"
    gguf.write_bytes(b"GGUF")
    chosen = []
    app = make_app(
        FakeBackend(), opener=lambda spec, backend, device: chosen.append(spec) or FakeBackend(model_name=spec)
    )
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f4")
        await wait_until(pilot, lambda: isinstance(app.screen, ModelPickerScreen))
        app.screen.query_one("#add-path").focus()
        await pilot.press(*"/nowhere.gguf", "enter")
        assert "not a .gguf file" in str(app.screen.query_one("#add-error").render())
        app.screen.query_one("#add-path").value = str(gguf)
        await pilot.press("enter")
        await wait_until(pilot, lambda: chosen == [str(gguf)])
        await wait_until(pilot, lambda: app.engine is not None and app.engine.model_name == str(gguf))
        assert app.settings.extra_paths == [str(gguf)]
        assert app.chat.conversation.settings["model"] == str(gguf)
        await pilot.press("f4")
        await wait_until(pilot, lambda: isinstance(app.screen, ModelPickerScreen))
        options = app.screen.query_one("#models", OptionList)
        labels = [str(options.get_option_at_index(i).prompt) for i in range(options.option_count)]
        assert any(label.startswith("mine") and "added" in label for label in labels)
