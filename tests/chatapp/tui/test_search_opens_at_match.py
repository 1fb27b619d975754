"""Ctrl+O: a hit in a branch not shown opens that branch, scrolled to the match and marked (paged in)."""

from __future__ import annotations

import pytest

from chatapp.history import HistoryStore
from tests.helpers.branched_history import match_in_a_hidden_branch
from tests.helpers.fake_backend import FakeBackend
from tests.helpers.tui_app import make_app, wait_until

pytestmark = pytest.mark.asyncio


async def test_ctrl_o_opens_a_hit_in_a_branch_not_shown_at_the_match(tmp_path):
    store = HistoryStore(tmp_path / "h.sqlite3")
    conversation, first, other = match_in_a_hidden_branch(store)
    store.rename(conversation.id, "Graves")
    app = make_app(FakeBackend(), store=store)
    async with app.run_test(size=(100, 30)) as pilot:
        await app.open_conversation(other.id)
        await pilot.press("ctrl+o")
        await pilot.press(*"yorick")
        await wait_until(
            pilot,
            lambda: bool(app.screen.query("CommandList")) and app.screen.query_one("CommandList").option_count > 0,
            what="the hit",
        )
        await pilot.press("enter")
        log = app.chat.log_view
        await wait_until(pilot, lambda: log.widget_for(first.id) is not None, what="the match paged in")
        found = log.widget_for(first.id)
        assert found.has_class("found") and app.chat.conversation.id == conversation.id
        await wait_until(pilot, lambda: log.region.contains_region(found.region), what="the match in view")
