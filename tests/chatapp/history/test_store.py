"""The SQLite history store, against a real file."""

from __future__ import annotations

import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from chatapp.history import (
    DEFAULT_TITLE,
    MIGRATIONS,
    SCHEMA_VERSION,
    HistoryError,
    HistoryFull,
    HistoryStore,
    HistoryUnavailable,
    HistoryWriteError,
    SchemaTooNew,
    history_path,
    move_aside,
    title_from,
)


def test_the_file_lives_under_chatapp_home_is_private_and_in_wal_mode(tmp_path):
    store = HistoryStore()
    assert store.path == history_path()
    assert str(store.path).startswith(str(tmp_path))
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.schema_version == SCHEMA_VERSION


def test_conversations_are_newest_first_and_titled_from_the_first_message():
    store = HistoryStore()
    older = store.create_conversation()
    newer = store.create_conversation()
    assert older.title == DEFAULT_TITLE
    store.add_message(
        older.id, "user", "\n  To be, or not to be, that is the question: whether 'tis nobler\nin the mind"
    )
    store.add_message(older.id, "user", "second message does not retitle")
    titles = [c.title for c in store.conversations()]
    assert titles[0].startswith("To be, or not to be") and titles[0].endswith("…")
    assert [c.id for c in store.conversations()] == [older.id, newer.id]  # touched by the message


def test_filter_matches_titles_and_message_text_ignoring_case():
    store = HistoryStore()
    hamlet = store.create_conversation(title="Hamlet")
    other = store.create_conversation(title="Other")
    store.add_message(other.id, "assistant", "Alas, poor YORICK")
    assert [c.id for c in store.conversations("hamlet")] == [hamlet.id]
    assert [c.id for c in store.conversations("yorick")] == [other.id]
    assert store.conversations("nothing like this") == []


def test_rename_delete_and_settings():
    store = HistoryStore()
    conversation = store.create_conversation({"chat": {"temperature": 0.5}})
    store.add_message(conversation.id, "user", "hi")
    store.rename(conversation.id, "  Greetings ")
    store.save_settings(conversation.id, {"chat": {"temperature": 0.1}})
    loaded = store.conversation(conversation.id)
    assert (loaded.title, loaded.settings) == ("Greetings", {"chat": {"temperature": 0.1}})
    store.delete(conversation.id)
    assert store.conversation(conversation.id) is None
    assert store.messages(conversation.id) == []


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_reply_whose_writer_died_is_marked_interrupted_on_the_next_open(tmp_path):
    path = tmp_path / "h.sqlite3"
    store = HistoryStore(path)
    conversation = store.create_conversation()
    store.add_message(conversation.id, "user", "hello")
    reply = store.add_message(conversation.id, "assistant", "", status="streaming")
    store.update_content(reply.id, "Good mor")
    store._db.execute("UPDATE messages SET owner_pid = ? WHERE id = ?", (dead_pid(), reply.id))  # as if it died
    reopened = HistoryStore(path)
    assert reopened.recovered == 1
    messages = reopened.messages(conversation.id)
    assert [(m.content, m.status) for m in messages] == [("hello", "complete"), ("Good mor", "interrupted")]


def test_finishing_a_reply_keeps_its_numbers_and_token_data():
    store = HistoryStore()
    conversation = store.create_conversation()
    reply = store.add_message(conversation.id, "assistant", "", status="streaming")
    store.finish_message(
        reply.id, "done", "complete", {"completion_tokens": 1}, None, [{"text": "done", "candidates": []}]
    )
    message = store.message(reply.id)
    assert (message.status, message.stats, message.inspection[0]["text"]) == (
        "complete",
        {"completion_tokens": 1},
        "done",
    )
    with pytest.raises(ValueError):
        store.finish_message(reply.id, "x", "streaming")


def test_an_old_schema_is_migrated_and_keeps_its_data(tmp_path):
    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(MIGRATIONS[0] + "; PRAGMA user_version = 1;")
    db.execute("INSERT INTO conversations (title, created_at, updated_at) VALUES ('old', 0, 0)")
    db.execute("INSERT INTO messages (conversation_id, role, content, created_at) VALUES (1, 'user', 'kept', 0)")
    db.commit()
    db.close()
    store = HistoryStore(path)
    assert store.schema_version == SCHEMA_VERSION
    assert [m.content for m in store.messages(1)] == ["kept"]
    assert store.messages(1)[0].inspection is None


def test_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / "new.sqlite3"
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(SchemaTooNew):
        HistoryStore(path)


def test_title_from_skips_blank_lines():
    assert title_from("\n\n  hello  \nworld") == "hello"
    assert title_from("   ") == DEFAULT_TITLE


def test_move_aside_renames_the_file_and_its_wal_keeping_every_byte(tmp_path):
    path = tmp_path / "history.sqlite3"
    path.write_bytes(b"not really a database")
    (tmp_path / "history.sqlite3-wal").write_bytes(b"wal bytes")
    aside = move_aside(path)
    assert not path.exists() and not (tmp_path / "history.sqlite3-wal").exists()
    assert aside.parent == tmp_path and aside.name.startswith("history.sqlite3.corrupt-")
    assert aside.read_bytes() == b"not really a database"
    assert Path(f"{aside}-wal").read_bytes() == b"wal bytes"
    path.write_bytes(b"second")
    assert move_aside(path) != aside  # the same second: a new name, the first one kept
    assert aside.read_bytes() == b"not really a database"


def test_an_in_memory_store_works_and_writes_no_file(tmp_path):
    for store in (HistoryStore(":memory:"), HistoryStore.in_memory()):
        conversation = store.create_conversation()
        store.add_message(conversation.id, "user", "hello there")
        assert [m.content for m in store.messages(conversation.id)] == ["hello there"]
        assert [c.id for c in store.conversations("hel")] == [conversation.id]
    assert not history_path().exists()


def test_the_open_conversation_is_remembered_until_it_is_deleted(tmp_path):
    path = tmp_path / "h.sqlite3"
    store = HistoryStore(path)
    assert store.last_open() is None
    first, second = store.create_conversation(), store.create_conversation()
    store.remember_open(first.id)
    store.remember_open(second.id)
    assert HistoryStore(path).last_open() == second.id
    store.delete(second.id)
    assert store.last_open() is None


def test_errors_say_what_happened_in_one_line():
    error = HistoryFull("the disk is full: free some space", "/x/h.sqlite3")
    assert isinstance(error, HistoryError) and str(error) == error.reason and error.path == Path("/x/h.sqlite3")
    assert issubclass(SchemaTooNew, HistoryUnavailable) and issubclass(HistoryWriteError, HistoryError)
    assert error.can_move_aside is False
