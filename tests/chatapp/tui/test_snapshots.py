"""Snapshot tests (pytest-textual-snapshot) of the main screen, the settings panel and the inspector.

After a deliberate change to the look: pytest tests/chatapp/tui/test_snapshots.py --snapshot-update
"""

from __future__ import annotations

from tests.helpers.fake_backend import FakeBackend
from tests.helpers.tui_app import make_app, send, wait_idle, wait_until

REPLY = ["Good morrow, my lord.\n\n", "```python\n", "print('to be')\n", "```\n"]
SIZE = (110, 32)


def chat_app():
    return make_app(FakeBackend(replies=[list(REPLY)]))


async def chat_once(pilot):
    # App.run's autopilot, unlike run_test, starts before the chat screen has mounted
    await wait_until(pilot, lambda: pilot.app.chat.is_mounted, what="the chat screen")
    await send(pilot, "Good morrow!")
    await wait_idle(pilot)
    pilot.app.chat.prompt.cursor_blink = False  # a blinking cursor would make the picture depend on timing
    pilot.app.chat.prompt.focus()
    await pilot.wait_for_scheduled_animations()
    pilot.app.chat.log_view.scroll_end(animate=False)
    await pilot.pause()
    await pilot.pause()


def test_main_screen(snap_compare):
    assert snap_compare(chat_app(), terminal_size=SIZE, run_before=chat_once)


def test_settings_panel_with_a_refused_value(snap_compare):
    async def open_settings(pilot):
        await chat_once(pilot)
        await pilot.press("f2")
        await wait_until(pilot, lambda: pilot.app.screen.query("#top_p"))
        box = pilot.app.screen.query_one("#top_p")
        box.value = "1.5"
        box.scroll_visible(top=True, animate=False)  # the panel is longer than the screen: show the refusal
        await pilot.pause()

    assert snap_compare(chat_app(), terminal_size=(110, 48), run_before=open_settings)


def test_inspector(snap_compare):
    async def open_inspector(pilot):
        await chat_once(pilot)
        await pilot.press("f3")
        await wait_until(pilot, lambda: pilot.app.screen.query("#candidates"))
        await pilot.pause()

    assert snap_compare(chat_app(), terminal_size=SIZE, run_before=open_inspector)
