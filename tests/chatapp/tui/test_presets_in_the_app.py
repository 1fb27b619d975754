"""Presets in the app, through Pilot: the settings panel applies one and saves the fields as one,
Ctrl+P ("Preset: NAME") applies one to the open chat, an imported Modelfile is there too, and a
broken preset file is a notice, never a crash."""

from __future__ import annotations

import pytest
from textual.command import CommandPalette
from textual.widgets import Input, Select, TextArea

from chatapp import cli
from chatapp.presets import find_preset, presets_dir
from chatapp.settings import ChatDefaults
from chatapp.tui.screens.dialogs import TextPromptScreen
from chatapp.tui.screens.settings import SettingsScreen
from tests.helpers.fake_backend import FakeBackend
from tests.helpers.tui_app import make_app, notices, wait_until

pytestmark = pytest.mark.asyncio


async def open_settings(pilot) -> SettingsScreen:
    await pilot.press("f2")
    await wait_until(pilot, lambda: isinstance(pilot.app.screen, SettingsScreen))
    return pilot.app.screen


def conversation_chat(app) -> ChatDefaults:
    return ChatDefaults.from_dict(app.store.conversation(app.chat.current.id).settings.get("chat", {}))


async def run_palette_command(pilot, query: str) -> None:
    await pilot.press("ctrl+p")
    await wait_until(pilot, lambda: isinstance(pilot.app.screen, CommandPalette))
    await pilot.press(*query)
    palette = pilot.app.screen
    await wait_until(
        pilot,
        lambda: any(query.lower() in str(o.prompt).lower() for o in palette.query_one("CommandList").options),
        what=f"the palette to offer {query}",
    )
    await pilot.press("enter")
    await wait_until(pilot, lambda: not isinstance(pilot.app.screen, CommandPalette))


async def test_the_settings_panel_applies_a_preset_and_save_keeps_it():
    app = make_app(FakeBackend())
    async with app.run_test(size=(120, 60)) as pilot:
        screen = await open_settings(pilot)
        screen.query_one("#preset", Select).value = "sonneteer"
        await pilot.pause()
        sonneteer = find_preset("sonneteer").chat
        assert screen.query_one("#system_prompt", TextArea).text == sonneteer.system_prompt
        assert screen.query_one("#temperature", Input).value == str(sonneteer.temperature)
        assert screen.query_one("#max_tokens", Input).value == str(sonneteer.max_tokens)
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: app.screen is app.chat, what="the panel to close")
        assert conversation_chat(app) == sonneteer


async def test_save_as_preset_keeps_the_fields_under_a_name():
    app = make_app(FakeBackend())
    async with app.run_test(size=(120, 60)) as pilot:
        screen = await open_settings(pilot)
        screen.query_one("#temperature", Input).value = "0.25"
        screen.query_one("#system_prompt", TextArea).text = "Answer in one line."
        await pilot.pause()
        await pilot.click("#save-preset")
        await wait_until(pilot, lambda: isinstance(app.screen, TextPromptScreen), what="the name prompt")
        await pilot.press(*"calm", "enter")
        await wait_until(pilot, lambda: app.screen is screen, what="back in the panel")
        assert (presets_dir() / "calm.toml").is_file()
        saved = find_preset("calm")
        assert (saved.chat.temperature, saved.chat.system_prompt, saved.builtin) == (0.25, "Answer in one line.", False)
        assert "calm" in [value for _, value in screen.preset_options()]
        assert any("Saved as the preset calm" in n for n in notices(app))


async def test_a_wrong_field_is_not_saved_as_a_preset():
    app = make_app(FakeBackend())
    async with app.run_test(size=(120, 60)) as pilot:
        screen = await open_settings(pilot)
        screen.query_one("#top_p", Input).value = "7"
        await pilot.pause()
        await pilot.click("#save-preset")
        await pilot.pause()
        assert app.screen is screen and not presets_dir().exists()


async def test_ctrl_p_applies_a_preset_to_the_open_chat():
    app = make_app(FakeBackend())
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        await run_palette_command(pilot, "Preset: fool")
        await wait_until(pilot, lambda: conversation_chat(app) == find_preset("fool").chat, what="fool applied")
        assert any("Preset fool applied" in n for n in notices(app))
        assert app.chat.chat_settings().top_k == 50  # what the next reply samples with


async def test_an_imported_modelfile_is_a_preset_the_palette_finds(tmp_path):
    modelfile = tmp_path / "Modelfile"
    modelfile.write_text('SYSTEM """Speak like a pirate."""\nPARAMETER temperature 0.6\n', encoding="utf-8")
    assert cli.main(["preset", "import", str(modelfile), "--name", "pirate"]) == 0
    app = make_app(FakeBackend())
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        await run_palette_command(pilot, "Preset: pirate")
        await wait_until(pilot, lambda: conversation_chat(app).system_prompt == "Speak like a pirate.")
        assert conversation_chat(app).temperature == 0.6


async def test_a_broken_preset_file_is_a_notice_and_the_others_still_work():
    presets_dir().mkdir(parents=True)
    (presets_dir() / "broken.toml").write_text("temperature = 'warm'\nthinking = 3\n", encoding="utf-8")
    app = make_app(FakeBackend())
    async with app.run_test(size=(120, 60)) as pilot:
        screen = await open_settings(pilot)
        broken = [n for n in notices(app) if n.startswith("presets/broken.toml")]
        assert len(broken) == 1 and "temperature" in broken[0] and "thinking" in broken[0]
        assert "broken" not in [value for _, value in screen.preset_options()]
        await pilot.press("escape")
        await run_palette_command(pilot, "Preset: hamlet")
        await wait_until(pilot, lambda: conversation_chat(app) == find_preset("hamlet").chat)
        # the palette said it once more when it opened, not at every key typed in it
        assert 1 <= len([n for n in notices(app) if n.startswith("presets/broken.toml")]) <= 2


async def test_the_welcome_offers_the_personas_on_the_built_in_model_only():
    app = make_app(FakeBackend(model_name="shakespeare-chat"))
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: app.chat.is_mounted and app.chat.query("#welcome"), what="the welcome")
        assert "Preset: hamlet, fool or sonneteer" in str(app.query_one("#welcome").render())
    app = make_app(FakeBackend())
    app.default_spec = app.loaded_spec = "someone/Tiny-Chat-GGUF:Q8_0"
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: app.chat.is_mounted and app.chat.query("#welcome"), what="the welcome")
        assert "Preset:" not in str(app.query_one("#welcome").render())


async def test_chat_with_a_preset_starts_a_new_conversation_with_it():
    from chatapp.history import HistoryStore

    store = HistoryStore()
    earlier = store.create_conversation()
    store.add_message(earlier.id, "user", "an earlier chat")
    store.remember_open(earlier.id)
    hamlet = find_preset("hamlet")
    app = make_app(FakeBackend(), store=store, preset=hamlet)
    async with app.run_test() as pilot:
        await pilot.pause()
        assert app.chat.current.id != earlier.id
        assert conversation_chat(app) == hamlet.chat
