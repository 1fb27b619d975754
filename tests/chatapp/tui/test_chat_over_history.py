"""The chat screen over a real SQLite history: versions, editing, paging, restarts,
Ctrl+C, a history file that cannot be used, and a disk that fills up mid-reply."""

from __future__ import annotations

import sqlite3

import pytest

from chatapp.history import HistoryStore, history_path
from chatapp.tui.app import ChatApp
from chatapp.tui.screens.chat import PAGE_SIZE
from chatapp.tui.screens.history_problem import HistoryProblemScreen
from chatapp.tui.widgets.messages import AssistantMessage, UserMessage
from chatapp.tui.widgets.welcome import Welcome
from tests.helpers.fake_backend import FakeBackend
from tests.helpers.tui_app import make_app, reply_texts, send, wait_idle, wait_until

pytestmark = pytest.mark.asyncio


def shown(store: HistoryStore, conversation_id: int) -> list[str]:
    return [m.content for m in store.messages(conversation_id)]


def conversations_of(store: HistoryStore, *title_and_text: tuple[str, str]) -> list[int]:
    """One conversation per (title, first message), oldest first; their ids."""
    ids = []
    for title, text in title_and_text:
        conversation = store.create_conversation({}, title=title)
        store.add_message(conversation.id, "user", text)
        ids.append(conversation.id)
    return ids


def unusable_history(content: bytes):
    """A history file of these bytes where the app looks for it, and the app that opens it."""
    path = history_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path, ChatApp(engine=FakeBackend())


async def test_regenerate_keeps_every_version_and_steps_between_them(tmp_path):
    engine = FakeBackend(replies=[["first"], ["second"], ["after"]])
    store = HistoryStore(tmp_path / "h.sqlite3")
    app = make_app(engine, store=store)
    async with app.run_test() as pilot:
        await send(pilot, "hi")
        await wait_idle(pilot)
        await pilot.press("ctrl+r")
        await wait_idle(pilot)
        conversation = app.chat.conversation.id
        assert reply_texts(app) == ["second"] and shown(store, conversation) == ["hi", "second"]
        assert app.query_one(AssistantMessage).branch_text() == "branch 2/2"
        await pilot.press("alt+left")
        await pilot.pause()
        assert reply_texts(app) == ["first"] and shown(store, conversation) == ["hi", "first"]
        assert app.query_one(AssistantMessage).branch_text() == "branch 1/2"
        await send(pilot, "and then?")
        await wait_idle(pilot)
        assert [m.content for m in engine.calls[-1]["messages"]] == ["hi", "first", "and then?"]
        await pilot.press("alt+right")  # the last reply has one version: nothing changes
        await pilot.pause()
        assert shown(store, conversation) == ["hi", "first", "and then?", "after"]


async def test_edit_last_deletes_nothing_until_the_edit_is_sent(tmp_path):
    engine = FakeBackend(replies=[["one"], ["two"]])
    store = HistoryStore(tmp_path / "h.sqlite3")
    app = make_app(engine, store=store)
    async with app.run_test() as pilot:
        await send(pilot, "a typo")
        await wait_idle(pilot)
        conversation = app.chat.conversation.id
        await pilot.press("ctrl+l")
        await pilot.pause()
        assert app.chat.prompt.text == "a typo"
        assert shown(store, conversation) == ["a typo", "one"]
        assert len(app.query(".being-edited")) == 2
        await pilot.press("escape")  # gives up the edit
        await pilot.pause()
        assert app.chat.editing is None and not app.query(".being-edited") and app.chat.prompt.text == ""
        assert shown(store, conversation) == ["a typo", "one"]
        await pilot.press("ctrl+l")
        app.chat.prompt.text = ""  # typed over: emptied first, as Ctrl+U or a select-all does, then written
        await pilot.pause()
        app.chat.prompt.text = "no typo"
        await pilot.press("enter")
        await wait_idle(pilot)
        assert shown(store, conversation) == ["no typo", "two"]
        assert [w.content for w in app.query(UserMessage)] == ["no typo"]
    reopened = HistoryStore(tmp_path / "h.sqlite3")
    assert shown(reopened, conversation) == ["no typo", "two"]


async def test_each_reply_keeps_the_name_of_the_model_that_wrote_it(tmp_path):
    path = tmp_path / "h.sqlite3"
    first, second = FakeBackend(model_name="model-a"), FakeBackend(model_name="model-b")
    app = make_app(first, store=HistoryStore(path))
    async with app.run_test() as pilot:
        await send(pilot, "hi")
        await wait_idle(pilot)
        app.engine = second
        await send(pilot, "again")
        await wait_idle(pilot)
        assert [w.model_name for w in app.query(AssistantMessage)] == ["model-a", "model-b"]
    app = make_app(FakeBackend(model_name="model-c"), store=HistoryStore(path))
    async with app.run_test() as pilot:
        await pilot.pause()
        assert [w.model_name for w in app.query(AssistantMessage)] == ["model-a", "model-b"]


async def test_a_long_conversation_loads_earlier_messages_as_the_user_scrolls_up(tmp_path):
    store = HistoryStore(tmp_path / "h.sqlite3")
    conversation = store.create_conversation({})
    for index in range(500):
        store.add_message(conversation.id, "user", f"question {index}")
        store.add_message(conversation.id, "assistant", f"answer **{index}**")
    app = make_app(FakeBackend(), store=store)
    async with app.run_test() as pilot:
        log = app.chat.log_view
        await wait_until(pilot, lambda: len(log.message_widgets()) == PAGE_SIZE, what="the newest page")
        assert log.message_widgets()[-1].content == "answer **499**"
        looking_at = log.message_widgets()[0]
        log.scroll_home(animate=False)
        await wait_until(pilot, lambda: len(log.message_widgets()) == 2 * PAGE_SIZE, what="earlier messages")
        assert log.message_widgets()[0].content == f"question {500 - PAGE_SIZE}"
        # the view stays where the user was: the message at the top before is still near the top
        await wait_until(
            pilot,
            lambda: log.scroll_y > 0 and abs(looking_at.region.y - log.region.y) <= 2,
            what="the view to keep its place (the message at the top before still near the top)",
        )


async def test_a_long_session_keeps_a_bounded_number_of_messages_mounted(tmp_path, monkeypatch):
    monkeypatch.setattr("chatapp.tui.screens.chat.MOST_MOUNTED", 6)
    app = make_app(FakeBackend(), store=HistoryStore(tmp_path / "h.sqlite3"))
    async with app.run_test() as pilot:
        for index in range(5):
            await send(pilot, f"message {index}")
            await wait_idle(pilot)
        log = app.chat.log_view
        assert [w.content for w in log.message_widgets()][0] == "message 2"
        assert len(log.message_widgets()) == 6 and app.chat.has_earlier
        log.scroll_home(animate=False)
        await wait_until(pilot, lambda: log.message_widgets()[0].content == "message 0", what="the trimmed ones back")


async def test_the_app_reopens_the_conversation_that_was_open(tmp_path):
    path = tmp_path / "h.sqlite3"
    store = HistoryStore(path)
    older, newer = conversations_of(store, ("older", "in the older one"), ("newer", "in the newer one"))
    app = make_app(FakeBackend(), store=store)
    async with app.run_test() as pilot:
        assert app.chat.conversation.id == newer
        await pilot.press("alt+down")
        await pilot.pause()
        assert app.chat.conversation.id == older
    app = make_app(FakeBackend(), store=HistoryStore(path))
    async with app.run_test() as pilot:
        assert app.chat.conversation.id == older
        await pilot.press("alt+up")
        await pilot.pause()
        assert app.chat.conversation.id == newer


async def test_ctrl_c_stops_a_streaming_reply_and_quits_only_when_nothing_streams():
    engine = FakeBackend(replies=[["a", "b", "c"]], hold_after=1)
    app = make_app(engine)
    async with app.run_test() as pilot:
        await send(pilot, "go")
        await wait_until(pilot, engine.holding.is_set, what="the reply to stream")
        await pilot.press("ctrl+c")
        await wait_idle(pilot)
        assert app.is_running
        assert app.store.messages(app.chat.conversation.id)[-1].status == "stopped"
        await pilot.press("ctrl+c")
        await wait_until(pilot, lambda: not app.is_running, what="the app to quit")


async def test_the_first_screen_says_which_model_and_how_to_start():
    app = make_app(FakeBackend(model_name="fake-model"))
    async with app.run_test() as pilot:
        await pilot.pause()
        welcome = app.query_one(Welcome)
        assert "fake-model" in str(welcome.render())
        await send(pilot, "hello")
        await wait_idle(pilot)
        assert not app.query(Welcome)


async def test_search_finds_text_in_another_conversation_and_opens_it(tmp_path):
    store = HistoryStore(tmp_path / "h.sqlite3")
    target, other = conversations_of(store, ("ships", "tell me about the Armada of 1588"), ("other", "nothing to see"))
    app = make_app(FakeBackend(), store=store)
    async with app.run_test() as pilot:
        assert app.chat.conversation.id == other
        await pilot.press("ctrl+o")
        await pilot.pause()
        await pilot.press(*"armada")
        await wait_until(
            pilot,
            lambda: app.screen.query("CommandList") and app.screen.query("CommandList").first().option_count > 0,
            what="a search hit",
        )
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.chat.conversation.id == target, what="the conversation to open")


async def test_a_corrupt_history_file_is_kept_aside_and_a_fresh_one_started():
    path, app = unusable_history(b"this is not a database, it is a shopping list\n" * 100)
    async with app.run_test() as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, HistoryProblemScreen), what="the problem dialog")
        reason = str(app.screen.query_one("#reason").render())
        assert str(path) in reason and "\n" not in reason.strip()
        await pilot.click("#move-aside")
        await wait_until(pilot, lambda: app.screen is app.chat, what="the chat screen")
        await send(pilot, "a fresh start")
        await wait_idle(pilot)
    kept = [p for p in path.parent.iterdir() if p.name.startswith(path.name + ".corrupt")]
    assert len(kept) == 1 and kept[0].read_bytes().startswith(b"this is not a database")
    assert shown(HistoryStore(path), HistoryStore(path).conversations()[0].id)[0] == "a fresh start"


async def test_chatting_without_saving_when_the_history_cannot_be_opened():
    path, app = unusable_history(b"\x00" * 4096)
    async with app.run_test() as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, HistoryProblemScreen), what="the problem dialog")
        await pilot.click("#continue")
        await send(pilot, "hello")
        await wait_idle(pilot)
        assert reply_texts(app) == ["Hello there, friend."]
        assert "Not saving" in str(app.query_one("#banner").render())
    assert path.read_bytes() == b"\x00" * 4096


async def test_a_full_disk_mid_reply_keeps_the_reply_and_saves_it_when_there_is_room(tmp_path):
    path = tmp_path / "h.sqlite3"
    store = HistoryStore(path)
    engine = FakeBackend(replies=[["x" * 3000] * 40], hold_after=1)
    app = make_app(engine, store=store)
    async with app.run_test() as pilot:
        await send(pilot, "fill it")
        await wait_until(pilot, engine.holding.is_set, what="the reply to stream")
        pages = store._db.execute("PRAGMA page_count").fetchone()[0]
        store._db.execute(f"PRAGMA max_page_count = {pages}")
        engine.release()
        await wait_idle(pilot)
        assert reply_texts(app)[0] == "x" * 3000 * 40
        assert app.chat.unsaved, "the final save could not have fitted"
        store._db.execute("PRAGMA max_page_count = 1073741823")
        await wait_until(pilot, lambda: not app.chat.unsaved, timeout=10, what="the retried save")
    row = sqlite3.connect(path).execute("SELECT content, status FROM messages WHERE role = 'assistant'").fetchone()
    assert row == ("x" * 3000 * 40, "complete")


async def test_the_header_says_while_the_decode_step_compiles():
    engine = FakeBackend(model_name="fake-model")
    engine.compile_state = "compiling"
    app = make_app(engine=None, model_spec="fake", opener=lambda spec, backend, device: engine)
    app.engine = None
    async with app.run_test() as pilot:
        await wait_until(pilot, lambda: app.engine is engine, what="the model to load")
        assert "compiling its decode step" in app.sub_title
        engine.compile_state = "on"
        await wait_until(pilot, lambda: app.sub_title.endswith("· compiled"), what="the header to follow")
        assert app.compile_watch is None
