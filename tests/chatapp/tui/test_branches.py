"""Conversations as trees, through the app on a real SQLite file: an early message edited (a new branch),
stepping between branches by key and by mouse, a reply regenerated mid-conversation, a fork, both exports,
a search hit in a branch not shown, a history of schema 4; and two frictions: the "no longer fit" toast
once per conversation, and a search hit opened at the match."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import pytest

from chatapp.history import HistoryStore, Status, history_path
from chatapp.paths import data_dir
from chatapp.tui.app import ChatApp
from chatapp.tui.screens.chat import PAGE_SIZE, dropped_text
from chatapp.tui.screens.inspector import InspectorScreen
from chatapp.tui.widgets.context_bar import ContextBar
from chatapp.tui.widgets.messages import AssistantMessage, ChatMessage, UserMessage, format_stats
from model.inference.backend import Finished
from tests.chatapp.history.test_branches_store import SCHEMA_4_FILE
from tests.helpers.branched_history import match_in_a_hidden_branch
from tests.helpers.fake_backend import FakeBackend
from tests.helpers.tui_app import make_app, notices, send, wait_idle, wait_until

pytestmark = pytest.mark.asyncio


def on_screen(app) -> list[str]:
    return [w.content for w in app.chat.log_view.message_widgets()]


def shown(store: HistoryStore, conversation_id: int) -> list[str]:
    return [m.content for m in store.messages(conversation_id)]


def widget_of(app, content: str) -> ChatMessage:
    return next(w for w in app.chat.log_view.message_widgets() if w.content == content)


async def select(pilot, content: str) -> ChatMessage:
    widget = widget_of(pilot.app, content)
    widget.focus()
    await pilot.pause()
    return widget


def prompt_tokens(app) -> int:
    """What the context bar says the model is sent."""
    return app.chat.query_one(ContextBar).use.prompt_tokens


async def in_view(pilot, widget):
    pilot.app.chat.log_view.scroll_to_widget(widget, animate=False)
    await pilot.pause()
    return widget


async def three_turns(pilot) -> int:
    for question in ("q1", "q2", "q3"):
        await send(pilot, question)
        await wait_idle(pilot)
    return pilot.app.chat.conversation.id


async def test_an_early_message_edited_branches_and_the_branches_can_be_stepped(tmp_path):
    engine = FakeBackend(replies=[["a1"], ["a2"], ["a3"], ["b1"], ["a4"]])
    store = HistoryStore(tmp_path / "h.sqlite3")
    app = make_app(engine, store=store)
    async with app.run_test() as pilot:
        conversation = await three_turns(pilot)
        await select(pilot, "q1")
        await pilot.press("ctrl+l")
        await pilot.pause()
        assert app.chat.prompt.text == "q1" and len(app.query(".being-edited")) == 6
        app.chat.prompt.text = "q1, edited"
        await pilot.press("enter")
        await wait_idle(pilot)
        assert on_screen(app) == ["q1, edited", "b1"] == shown(store, conversation)
        assert [m.content for m in engine.calls[-1]["messages"]] == ["q1, edited"]  # the old branch is not sent
        short_prompt = prompt_tokens(app)
        assert widget_of(app, "q1, edited").branch_text() == "branch 2/2"
        # Alt+Left on the selected message: the old branch comes back whole, and the model is sent it
        await select(pilot, "q1, edited")
        await pilot.press("alt+left")
        await pilot.pause()
        assert on_screen(app) == ["q1", "a1", "q2", "a2", "q3", "a3"] == shown(store, conversation)
        assert widget_of(app, "q1").branch_text() == "branch 1/2" and widget_of(app, "q1").has_focus
        assert prompt_tokens(app) > short_prompt  # the context bar follows the branch shown
        await send(pilot, "q4")
        await wait_idle(pilot)
        assert [m.content for m in engine.calls[-1]["messages"]] == ["q1", "a1", "q2", "a2", "q3", "a3", "q4"]
        # the mouse: a click on the right half of "‹ branch 1/2 ›" shows the next branch
        switcher = await in_view(pilot, widget_of(app, "q1").query_one(".branches"))
        await pilot.click(switcher, offset=(switcher.size.width - 1, 0))
        await pilot.pause()
        assert on_screen(app) == ["q1, edited", "b1"]
        switcher = await in_view(pilot, widget_of(app, "q1, edited").query_one(".branches"))
        await pilot.click(switcher, offset=(0, 0))
        await pilot.pause()
        assert on_screen(app) == ["q1", "a1", "q2", "a2", "q3", "a3", "q4", "a4"]
    reopened = HistoryStore(tmp_path / "h.sqlite3")
    assert shown(reopened, conversation)[-1] == "a4" and len(reopened.every_branch(conversation)) == 10


async def test_a_reply_mid_conversation_regenerated_and_an_edited_reply_are_new_branches(tmp_path):
    engine = FakeBackend(replies=[["a1"], ["a2"], ["a3"], ["a2, again"], ["a1, again"]])
    store = HistoryStore(tmp_path / "h.sqlite3")
    app = make_app(engine, store=store)
    async with app.run_test() as pilot:
        conversation = await three_turns(pilot)
        await select(pilot, "a2")
        await pilot.press("ctrl+r")
        await wait_idle(pilot)
        assert on_screen(app) == ["q1", "a1", "q2", "a2, again"] == shown(store, conversation)
        assert [m.content for m in engine.calls[-1]["messages"]] == ["q1", "a1", "q2"]
        assert widget_of(app, "a2, again").branch_text() == "branch 2/2"
        await pilot.press("f3")  # the inspector shows the reply of the branch shown
        await wait_until(pilot, lambda: isinstance(app.screen, InspectorScreen), what="the inspector")
        assert [step["text"] for step in app.screen.steps] == ["a2, again"]
        await pilot.press("escape")
        await select(pilot, "a2, again")
        await pilot.press("alt+left")
        await pilot.pause()
        await pilot.press("f3")
        await wait_until(pilot, lambda: isinstance(app.screen, InspectorScreen), what="the inspector")
        assert [step["text"] for step in app.screen.steps] == ["a2"]
        await pilot.press("escape")
        await pilot.pause()
        assert on_screen(app) == ["q1", "a1", "q2", "a2", "q3", "a3"]
        await select(pilot, "a2")
        await pilot.press("alt+right")
        await pilot.pause()
        # a reply edited by hand: a branch too, with nothing generated
        calls = len(engine.calls)
        await select(pilot, "a1")
        await pilot.press("ctrl+l")
        app.chat.prompt.text = "a1, as I would have said it"
        await pilot.press("enter")
        await pilot.pause()
        assert on_screen(app) == ["q1", "a1, as I would have said it"] and len(engine.calls) == calls
        assert isinstance(widget_of(app, "a1, as I would have said it"), AssistantMessage)
        await pilot.press("alt+left")  # nothing selected: the newest message steps
        await pilot.pause()
        assert on_screen(app) == ["q1", "a1", "q2", "a2, again"]
        await select(pilot, "q1")  # a message of yours selected: it is answered again, beside its reply
        await pilot.press("ctrl+r")
        await wait_idle(pilot)
        assert on_screen(app) == ["q1", "a1, again"] and widget_of(app, "a1, again").branch_text() == "branch 3/3"
        assert [m.content for m in engine.calls[-1]["messages"]] == ["q1"]


async def test_a_fork_from_a_message_opens_a_new_conversation_and_leaves_the_original(tmp_path):
    store = HistoryStore(tmp_path / "h.sqlite3")
    app = make_app(FakeBackend(replies=[["a1"], ["a2"], ["a3"], ["forked on"]]), store=store)
    async with app.run_test() as pilot:
        original = await three_turns(pilot)
        await select(pilot, "q2")
        await pilot.press("f12")
        await pilot.pause()
        fork = app.chat.conversation.id
        assert fork != original and on_screen(app) == ["q1", "a1", "q2"]
        assert app.chat.conversation.title == "q1 (fork)"
        assert any("Forked into" in n for n in notices(app))
        await send(pilot, "and now?")
        await wait_idle(pilot)
        assert shown(store, fork) == ["q1", "a1", "q2", "and now?", "forked on"]
        assert shown(store, original) == ["q1", "a1", "q2", "a2", "q3", "a3"]


async def test_markdown_exports_the_shown_branch_and_json_the_whole_tree(tmp_path):
    store = HistoryStore(tmp_path / "h.sqlite3")
    app = make_app(FakeBackend(replies=[["a1"], ["a2"], ["b1"]]), store=store)
    async with app.run_test() as pilot:
        await send(pilot, "q1")
        await wait_idle(pilot)
        await send(pilot, "q2")
        await wait_idle(pilot)
        await select(pilot, "q1")
        await pilot.press("ctrl+l")
        app.chat.prompt.text = "other q1"
        await pilot.press("enter")
        await wait_idle(pilot)
        await pilot.press("ctrl+s")
        await pilot.pause()
    [markdown] = (data_dir() / "exports").glob("*.md")
    [data] = (data_dir() / "exports").glob("*.json")
    text = markdown.read_text()
    assert "other q1" in text and "b1" in text and "q2" not in text and "a1" not in text
    messages = json.loads(data.read_text())["messages"]
    assert [(m["content"], m["shown"]) for m in messages] == [
        ("q1", False),
        ("a1", False),
        ("q2", False),
        ("a2", False),
        ("other q1", True),
        ("b1", True),
    ]
    ids = {m["content"]: m["id"] for m in messages}
    parents = {m["content"]: m["parent_id"] for m in messages}
    assert parents == {
        "q1": None,
        "a1": ids["q1"],
        "q2": ids["a1"],
        "a2": ids["q2"],
        "other q1": None,
        "b1": ids["other q1"],
    }


async def test_a_search_hit_in_a_branch_not_shown_opens_that_branch_scrolled_to_the_match(tmp_path):
    store = HistoryStore(tmp_path / "h.sqlite3")
    conversation, first, other = match_in_a_hidden_branch(store)
    app = make_app(FakeBackend(), store=store)
    async with app.run_test(size=(100, 30)) as pilot:
        await app.open_conversation(other.id)
        await pilot.pause()
        [hit] = [h for h in store.search("yorick") if h.message_id is not None]  # (the title matches too)
        await app.open_conversation(hit.conversation_id, hit.message_id)  # what the search palette's hit does
        await pilot.pause()
        log = app.chat.log_view
        found = log.widget_for(first.id)
        assert found is not None and found.has_class("found")  # paged in: it is 61 messages from the end
        assert shown(store, conversation.id)[0] == "where is Yorick buried?"
        await wait_until(pilot, lambda: log.region.contains_region(found.region), what="the match in view")
        assert len(log.message_widgets()) == PAGE_SIZE and app.chat.has_later and not app.chat.has_earlier
        for _ in range(10):  # reading on: later pages load at the bottom
            log.scroll_end(animate=False)
            await pilot.pause()
        await wait_until(pilot, lambda: not app.chat.has_later, what="the branch's end")
        assert [w.content for w in log.message_widgets()][-1] == f"line {3 * PAGE_SIZE - 1}"
        assert [w.content for w in log.message_widgets()] == shown(store, conversation.id)[
            -len(log.message_widgets()) :
        ]
        # back at the match, a message sent goes at the branch's end, with the newest messages shown
        await app.open_conversation(hit.conversation_id, hit.message_id)
        await pilot.pause()
        assert app.chat.has_later
        await send(pilot, "and Ophelia?")
        await wait_idle(pilot)
        assert not app.chat.has_later and on_screen(app)[-2:] == ["and Ophelia?", "Hello there, friend."]
        assert on_screen(app)[:-2] == shown(store, conversation.id)[-len(on_screen(app)) : -2]


async def test_a_schema_4_history_opens_with_its_versions_as_branches(tmp_path):
    path = history_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(SCHEMA_4_FILE, path)
    app = ChatApp(engine=FakeBackend())
    async with app.run_test() as pilot:
        await pilot.pause()
        assert on_screen(app) == ["to be?", "Not to be.", "and then?", "The rest is silence."]
        reply = await select(pilot, "Not to be.")
        assert reply.branch_text() == "branch 1/2"
        await pilot.press("alt+right")
        await pilot.pause()
        assert on_screen(app) == ["to be?", "To be, by Yorick."]
        yorick = widget_of(app, "To be, by Yorick.")
        assert (yorick.model_name, yorick.thinking, yorick.status) == ("big", "hmm, Hamlet", "stopped")
        await pilot.press("alt+left")
        await pilot.pause()
        assert on_screen(app) == ["to be?", "Not to be.", "and then?", "The rest is silence."]


class FullContextBackend(FakeBackend):
    """Says, as the engines do, that earlier messages no longer fit: after every reply."""

    def __init__(self, dropped: int, **kwargs):
        super().__init__(**kwargs)
        self.dropped = dropped

    def _stream(self, pieces, params, inspect, messages):
        for event in super()._stream(pieces, params, inspect, messages):
            if isinstance(event, Finished):
                notice = f"{self.dropped} earlier message(s) no longer fit the context and were left out"
                event = replace(event, notices=[notice, "another notice"])
            yield event


async def test_the_context_is_full_toast_shows_once_per_conversation_with_its_plural_right(tmp_path):
    app = make_app(FullContextBackend(1), store=HistoryStore(tmp_path / "h.sqlite3"))
    async with app.run_test() as pilot:
        for question in ("one", "two", "three"):
            await send(pilot, question)
            await wait_idle(pilot)
        said = notices(app)
        assert (
            said.count(
                "1 earlier message no longer fits the context and was left out "
                "(the context bar counts them from now on)"
            )
            == 1
        )
        assert said.count("another notice") == 3 and not any("message(s)" in n for n in said)
        await pilot.press("ctrl+n")
        await send(pilot, "four")
        await wait_idle(pilot)
        assert sum("no longer fit" in n for n in notices(app)) == 2  # a new conversation says it once too
    assert dropped_text(3).startswith("3 earlier messages no longer fit the context and were left out")
    assert "· 1 token ·" in format_stats({"reason": "stop", "completion_tokens": 1, "tokens_per_second": 5.0})


async def test_a_user_message_in_the_first_place_is_a_branch_root_after_an_edit(tmp_path):
    store = HistoryStore(tmp_path / "h.sqlite3")
    app = make_app(FakeBackend(replies=[["a1"], ["b1"]]), store=store)
    async with app.run_test() as pilot:
        await send(pilot, "q1")
        await wait_idle(pilot)
        await pilot.press("ctrl+l")  # nothing selected: your last message
        app.chat.prompt.text = "q1 again"
        await pilot.press("enter")
        await wait_idle(pilot)
        conversation = app.chat.conversation.id
        assert [(m.content, m.parent_id is None) for m in store.every_branch(conversation)] == [
            ("q1", True),
            ("a1", False),
            ("q1 again", True),
            ("b1", False),
        ]
        assert [type(w) for w in app.chat.log_view.message_widgets()] == [UserMessage, AssistantMessage]


async def test_one_interrupted_reply_is_said_in_the_singular(tmp_path):
    store = HistoryStore(tmp_path / "h.sqlite3")
    conversation = store.create_conversation()
    store.add_message(conversation.id, "user", "hi")
    reply = store.add_message(conversation.id, "assistant", "half", status=Status.STREAMING)
    store._db.execute("UPDATE messages SET heartbeat_at = 0 WHERE id = ?", (reply.id,))  # its writer is long gone
    store.close()
    app = make_app(FakeBackend(), store=HistoryStore(tmp_path / "h.sqlite3"))
    async with app.run_test() as pilot:
        await pilot.pause()
        assert any(n.startswith("1 reply was interrupted when the app last closed") for n in notices(app))
