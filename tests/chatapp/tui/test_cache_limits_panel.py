"""The saved prompts' limits in the settings panel (F2): shown, refused inline when wrong, and on Save kept in
settings.toml's [cache], given to the open model and to the models opened from then on."""

from __future__ import annotations

import pytest
from textual.widgets import Input

from chatapp.history import HistoryStore
from chatapp.models import opening
from chatapp.models.opening import CacheLimits
from chatapp.settings import load_settings, settings_path
from chatapp.tui.app import ChatApp
from chatapp.tui.screens.settings import SettingsScreen
from tests.chatapp.tui.test_settings_panel import error_text, open_settings, type_into
from tests.helpers.fake_backend import FakeBackend
from tests.helpers.tui_app import wait_until

pytestmark = pytest.mark.asyncio


class RemembersLimits(FakeBackend):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.limits: list[tuple[int, int]] = []

    def set_cache_limits(self, memory_mb: int, disk_mb: int) -> None:
        self.limits.append((memory_mb, disk_mb))


@pytest.fixture(autouse=True)
def session_cache():
    before = opening.session_cache()
    yield
    opening.set_session_cache(before)


async def test_new_limits_are_saved_and_reach_the_open_model():
    path = settings_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# mine\n[cache]\nmemory_mb = 100\n", encoding="utf-8")
    engine = RemembersLimits(model_name="fake")
    app = ChatApp(model_spec="fake", opener=lambda *_: engine, store=HistoryStore(), settings=load_settings())
    async with app.run_test(size=(120, 60)) as pilot:
        await wait_until(pilot, lambda: app.engine is not None, what="the model to load")
        assert opening.session_cache() == CacheLimits(100, 2048)  # the file's, for the models the app opens
        screen = await open_settings(pilot)
        assert screen.query_one("#cache_memory_mb", Input).value == "100"
        assert screen.query_one("#cache_disk_mb", Input).value == "2048"
        await type_into(pilot, screen, "cache_memory_mb", "64")
        await type_into(pilot, screen, "cache_disk_mb", "0")
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: not isinstance(app.screen, SettingsScreen))
    assert engine.limits == [(64, 0)]
    assert opening.session_cache() == CacheLimits(64, 0)
    assert load_settings().cache == CacheLimits(64, 0)
    assert path.read_text(encoding="utf-8").startswith("# mine")


@pytest.mark.parametrize("typed", ["-1", "1048577", "lots", "1.5"])
async def test_a_bad_limit_is_refused_inline_and_nothing_changes(typed):
    engine = RemembersLimits(model_name="fake")
    app = ChatApp(model_spec="fake", opener=lambda *_: engine, store=HistoryStore(), settings=load_settings())
    async with app.run_test(size=(120, 60)) as pilot:
        await wait_until(pilot, lambda: app.engine is not None, what="the model to load")
        screen = await open_settings(pilot)
        await type_into(pilot, screen, "cache_disk_mb", typed)
        assert error_text(screen, "cache_disk_mb") == (
            "a cache limit must be a whole number of MB from 0 (none kept) to 1048576"
        )
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.screen is screen  # not saved
        await pilot.press("escape")
        await pilot.pause()
    assert engine.limits == [] and load_settings().cache == CacheLimits()
