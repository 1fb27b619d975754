"""A reasoning model's thinking is kept apart from the answer: schema v4 adds it; a file of
schema v3 (the one before) migrates with every message kept and no thinking."""

from __future__ import annotations

import sqlite3

from chatapp.history import MIGRATIONS, SCHEMA_VERSION, HistoryStore
from chatapp.history.store import Status


def v3_file(path) -> None:
    """A history as chatapp wrote it with schema v3: the shipped steps, a conversation, a reply."""
    db = sqlite3.connect(path)
    db.executescript(str(MIGRATIONS[0]) + str(MIGRATIONS[1]))
    step = MIGRATIONS[2]
    assert callable(step)
    step(db)
    db.execute("PRAGMA user_version = 3")
    db.execute("INSERT INTO conversations (title, created_at, updated_at) VALUES ('Old', 0, 0)")
    db.execute("INSERT INTO messages (conversation_id, role, content, created_at) VALUES (1, 'user', 'hi', 0)")
    db.execute("INSERT INTO messages (conversation_id, role, content, created_at) VALUES (1, 'assistant', 'yo', 0)")
    db.execute("UPDATE messages SET slot = id")
    db.commit()
    db.close()


def test_a_v3_history_migrates_with_no_thinking(tmp_path):
    path = tmp_path / "history.sqlite3"
    v3_file(path)
    store = HistoryStore(path)
    assert store.schema_version == SCHEMA_VERSION == 5
    assert [(m.role, m.content, m.reasoning) for m in store.messages(1)] == [
        ("user", "hi", ""),
        ("assistant", "yo", ""),
    ]


def test_a_replys_thinking_is_saved_as_it_streams_and_at_its_end(tmp_path):
    store = HistoryStore(tmp_path / "history.sqlite3")
    conversation = store.create_conversation()
    store.add_message(conversation.id, "user", "2+2?")
    reply = store.add_message(conversation.id, "assistant", "", Status.STREAMING)
    store.update_content(reply.id, "", "Let me")
    assert store.messages(conversation.id)[-1].reasoning == "Let me"
    store.update_content(reply.id, "It")  # the thinking saved so far stays
    assert store.messages(conversation.id)[-1].reasoning == "Let me"
    store.finish_message(reply.id, "It is 4.", Status.COMPLETE, reasoning="Let me see.")
    store.close()
    again = HistoryStore(tmp_path / "history.sqlite3")
    last = again.messages(conversation.id)[-1]
    assert (last.content, last.reasoning, last.status) == ("It is 4.", "Let me see.", Status.COMPLETE)
    assert again.message(last.id).reasoning == "Let me see."
    kept = again.add_message(conversation.id, "assistant", "x", reasoning="y")
    assert kept.reasoning == "y" and again.message(kept.id).reasoning == "y"


def test_exports_mark_the_thinking_apart_from_the_answer(tmp_path):
    import json

    from chatapp.tui.export import to_json, to_markdown

    store = HistoryStore(tmp_path / "history.sqlite3")
    conversation = store.create_conversation()
    store.add_message(conversation.id, "user", "2+2?")
    store.add_message(conversation.id, "assistant", "It is 4.", reasoning="\nAdd.\n")
    store.add_message(conversation.id, "user", "ok")
    store.add_message(conversation.id, "assistant", "Yes.")
    messages = store.messages(conversation.id)
    markdown = to_markdown(conversation, messages)
    assert "## Assistant\n\n<details><summary>Thinking</summary>\n\nAdd.\n\n</details>\n\nIt is 4.\n" in markdown
    assert markdown.count("<details>") == 1
    exported = json.loads(to_json(conversation, messages))["messages"]
    assert [m.get("thinking") for m in exported] == [None, "\nAdd.\n", None, None]
    assert exported[1]["content"] == "It is 4."
