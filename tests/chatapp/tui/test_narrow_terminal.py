"""A 60 x 20 terminal: the sidebar folds away (Ctrl+B still shows it), the footer keeps the keys that
matter, the inspector keeps every column readable; and it names control tokens instead of ''."""

from __future__ import annotations

import pytest
from textual.widgets import DataTable, OptionList

from chatapp.tui.screens.inspector import InspectorScreen, shown_token
from chatapp.tui.widgets.sidebar import ConversationSidebar
from tests.helpers.fake_backend import FakeBackend
from tests.helpers.tui_app import make_app

pytestmark = pytest.mark.asyncio

NARROW = (60, 20)
END = {"id": 7, "text": "<|im_end|>", "control": True, "raw_prob": 0.2, "final_prob": 0.0, "cut_by": "top-k"}
STEP = {
    "token_id": 5,
    "text": " Denmark",
    "rank": 2,
    "candidates": [
        {"id": 4, "text": " Elsinore", "raw_prob": 0.4, "final_prob": 0.45, "drawn": False, "cut_by": None},
        {"id": 5, "text": " Denmark", "raw_prob": 0.3, "final_prob": 0.55, "drawn": True, "cut_by": None},
        END,
        {"id": 9, "text": "", "raw_prob": 0.1, "final_prob": 0.0, "drawn": False, "cut_by": "min-p"},
    ],
}
END_STEP = {"token_id": 7, "text": "<|im_end|>", "control": True, "rank": 1, "candidates": [END]}


async def test_the_sidebar_folds_away_when_narrow_and_ctrl_b_still_shows_it():
    app = make_app(FakeBackend())
    async with app.run_test(size=NARROW) as pilot:
        await pilot.pause()
        sidebar = app.chat.query_one(ConversationSidebar)
        assert not sidebar.display
        assert app.chat.query_one("#main").region.width == NARROW[0]
        await pilot.press("ctrl+b")
        await pilot.pause()
        assert sidebar.display and sidebar.region.width > 0
    wide = make_app(FakeBackend())
    async with wide.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        assert wide.chat.query_one(ConversationSidebar).region.width > 0


async def test_the_footer_keeps_help_new_chat_stop_settings_and_the_palette():
    app = make_app(FakeBackend())
    async with app.run_test(size=NARROW) as pilot:
        await pilot.pause()
        keys = {key.key: key.region for key in app.chat.query("FooterKey")}
        palette = keys.pop("ctrl+p")
        assert palette.right <= NARROW[0]
        for key in ("f1", "ctrl+n", "escape", "f2"):
            assert keys[key].right <= palette.x, f"{key} is hidden behind the palette's key"


async def test_the_inspector_keeps_every_column_readable_at_60_columns():
    app = make_app(FakeBackend())
    async with app.run_test(size=NARROW) as pilot:
        await pilot.pause()
        app.push_screen(InspectorScreen([STEP, END_STEP], "temperature 0.8, top-k 40, top-p 0.95, min-p 0.05"))
        await pilot.pause()
        table = app.screen.query_one(DataTable)
        widths = [column.get_render_width(table) for column in table.columns.values()]
        assert [str(column.label) for column in table.columns.values()][:3] == ["candidate", "raw p", "after filters"]
        assert sum(widths) <= table.scrollable_content_region.width
        assert table.region.right <= NARROW[0] and table.region.height >= len(STEP["candidates"]) + 1


async def test_control_tokens_are_shown_by_name():
    assert shown_token({"text": " Denmark"}) == "' Denmark'"
    assert shown_token(END) == "<|im_end|>"
    assert shown_token({"id": 9, "text": ""}) == "<control token 9>"  # a step that kept no name
    app = make_app(FakeBackend())
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        app.push_screen(InspectorScreen([STEP, END_STEP], ""))
        await pilot.pause()
        tokens = app.screen.query_one(OptionList)
        assert "<|im_end|>" in str(tokens.get_option_at_index(1).prompt)
        assert "''" not in str(tokens.get_option_at_index(1).prompt)
        cells = [str(row[0]) for row in (app.screen.query_one(DataTable).get_row_at(i) for i in range(4))]
        assert cells == ["' Elsinore'", "' Denmark'", "<|im_end|>", "<control token 9>"]
