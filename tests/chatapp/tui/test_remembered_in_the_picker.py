"""F4: a GGUF file added by path is remembered in the data folder (so `chatapp models` lists it
too), and one opened by path before is listed in the picker."""

from __future__ import annotations

import pytest
from textual.widgets import Input, OptionList

from chatapp.models.discovery import remember_path, remembered_paths
from chatapp.tui.screens.models import ModelPickerScreen
from tests.helpers.fake_backend import FakeBackend
from tests.helpers.tui_app import make_app, wait_until

pytestmark = pytest.mark.asyncio


def gguf_file(path):
    path.write_bytes(b"GGUF" + bytes(60))
    return path


async def open_picker(pilot) -> ModelPickerScreen:
    await pilot.press("f4")
    await wait_until(pilot, lambda: isinstance(pilot.app.screen, ModelPickerScreen), what="the model picker")
    return pilot.app.screen


async def test_a_file_opened_by_path_before_is_in_the_picker(tmp_path):
    remember_path(str(gguf_file(tmp_path / "earlier-model.gguf")))
    app = make_app(FakeBackend())
    async with app.run_test(size=(120, 40)) as pilot:
        picker = await open_picker(pilot)
        options = picker.query_one("#models", OptionList)
        shown = [str(options.get_option_at_index(i).prompt) for i in range(options.option_count)]
        assert any(line.startswith("earlier-model") and line.endswith("opened") for line in shown)


async def test_a_file_added_in_the_picker_is_remembered(tmp_path):
    model = gguf_file(tmp_path / "added.gguf")
    app = make_app(FakeBackend(), opener=lambda spec, backend, device: FakeBackend())
    async with app.run_test(size=(120, 40)) as pilot:
        picker = await open_picker(pilot)
        picker.query_one("#add-path", Input).value = str(model)
        picker.query_one("#add-path", Input).focus()
        await pilot.press("enter")
        await wait_until(pilot, lambda: str(model.resolve()) in remembered_paths(), what="the path remembered")
