"""Conversations as trees in the store: a history of schema 4 (reply versions) migrated to branches, edits
that branch anywhere, stepping between branches, forks, search in every branch, and a full disk."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from chatapp.history import SCHEMA_VERSION, HistoryFull, HistoryStore, Status
from tests.chatapp.history.test_disk_full import PIECE, fill_up, make_room

# Written by chatapp's schema-4 code (the commit before branches) through its own API: conversation 1 is
# "to be?" / reply "Not to be." (small, with inspector data) / "and then?" / "The rest is silence.", where the
# reply was regenerated as "To be, by Yorick." (big, stopped, with thinking) and the first version shown
# again; conversation 2 is "where is Elsinore?" / "In Denmark.". Then VACUUMed at 1 KB pages, out of WAL.
SCHEMA_4_FILE = Path(__file__).parent / "fixtures" / "history-schema4.sqlite3"


def contents(messages) -> list[str]:
    return [m.content for m in messages]


@pytest.fixture
def migrated(tmp_path) -> HistoryStore:
    path = tmp_path / "history.sqlite3"
    shutil.copy(SCHEMA_4_FILE, path)
    return HistoryStore(path)


def test_the_schema_4_file_is_what_the_test_says():
    db = sqlite3.connect(f"file:{SCHEMA_4_FILE}?mode=ro", uri=True)
    assert db.execute("PRAGMA user_version").fetchone()[0] == 4
    assert db.execute("SELECT COUNT(*) FROM messages WHERE shown = 0").fetchone()[0] == 1
    db.close()


def test_a_schema_4_history_keeps_everything_and_its_versions_become_branches(migrated):
    store = migrated
    assert store.schema_version == SCHEMA_VERSION == 5
    assert store.last_open() == 1
    assert [(c.id, c.title) for c in store.conversations()] == [(2, "Elsinore"), (1, "to be?")]
    assert store.conversation(1).settings == {"chat": {"temperature": 0.7}, "model": "small", "backend": ""}
    shown = store.messages(1)
    assert contents(shown) == ["to be?", "Not to be.", "and then?", "The rest is silence."]  # as it was shown
    assert [m.parent_id for m in shown] == [None, 1, 2, 3]
    first_reply = shown[1]
    assert (first_reply.branch, first_reply.branch_count, first_reply.model) == (1, 2, "small")
    assert first_reply.stats == {"reason": "stop", "completion_tokens": 4}
    assert [step["text"] for step in store.inspection(first_reply.id)] == ["Not"]
    other = store.branches(first_reply.id)[1]
    assert (other.content, other.status, other.model, other.reasoning) == (
        "To be, by Yorick.",
        Status.STOPPED,
        "big",
        "hmm, Hamlet",
    )
    assert (other.branch, other.branch_count, other.parent_id) == (2, 2, 1)
    assert contents(store.messages(2)) == ["where is Elsinore?", "In Denmark."]
    # every branch is searchable now (schema 4 indexed only the shown version), each message once
    assert [h.message_id for h in store.search("yorick")] == [other.id]
    assert [h.message_id for h in store.search("silence")] == [4]
    assert [h.message_id for h in store.search("be")] == [None, other.id, 2, 1]
    # the old version is a branch: shown, the rest of the conversation is not on it; back, it is again
    store.show_branch(other.id)
    assert contents(store.messages(1)) == ["to be?", "To be, by Yorick."]
    store.show_branch(first_reply.id)
    assert contents(store.messages(1)) == ["to be?", "Not to be.", "and then?", "The rest is silence."]
    # and the tree grows on from the migrated one
    store.add_message(1, "user", "and after?")
    assert [m.parent_id for m in store.messages(1)][-1] == 4
    store.close()


def test_migrating_twice_is_a_no_op_and_a_reopened_file_keeps_its_branches(migrated, tmp_path):
    migrated.show_branch(5)
    migrated.close()
    reopened = HistoryStore(tmp_path / "history.sqlite3")
    assert contents(reopened.messages(1)) == ["to be?", "To be, by Yorick."]
    assert reopened.schema_version == SCHEMA_VERSION


def conversation_of(store: HistoryStore, *texts: str) -> list[int]:
    """A conversation of alternating user and assistant messages; their ids."""
    conversation = store.create_conversation()
    return [
        store.add_message(conversation.id, "user" if i % 2 == 0 else "assistant", text).id
        for i, text in enumerate(texts)
    ]


def test_an_edit_of_the_first_message_branches_and_each_branch_keeps_its_own_end(tmp_path):
    store = HistoryStore(tmp_path / "h.sqlite3")
    ids = conversation_of(store, "hi", "hello", "how are you?", "well")
    edited = store.add_message(1, "user", "good day", sibling_of=ids[0])
    assert (edited.branch, edited.branch_count, edited.parent_id) == (2, 2, None)
    store.add_message(1, "assistant", "good day to you")
    assert contents(store.messages(1)) == ["good day", "good day to you"]
    assert store.message_count(1) == 2
    store.show_branch(ids[0])
    assert contents(store.messages(1)) == ["hi", "hello", "how are you?", "well"]
    store.show_branch(edited.id)  # the branch comes back with its own reply
    assert contents(store.messages(1)) == ["good day", "good day to you"]
    # a branch deep in one not shown: its ancestors become the chosen ones, the whole path shows
    store.show_branch(ids[2])
    assert contents(store.messages(1)) == ["hi", "hello", "how are you?", "well"]
    assert [m.branch for m in store.messages(1)] == [1, 1, 1, 1]
    assert store.user_prompts()[-1] == "good day"  # every branch's prompts can be recalled


def test_a_fork_copies_the_branch_up_to_a_message_into_a_new_conversation(tmp_path):
    store = HistoryStore(tmp_path / "h.sqlite3")
    ids = conversation_of(store, "hi", "hello", "how are you?", "well")
    store.finish_message(ids[1], "hello", Status.COMPLETE, {"completion_tokens": 1}, inspection=[{"text": "hello"}])
    store.save_settings(1, {"model": "small"})
    store.rename(1, "Greetings")
    fork = store.fork(ids[2])
    assert (fork.title, fork.settings) == ("Greetings (fork)", {"model": "small"})
    copied = store.messages(fork.id)
    assert contents(copied) == ["hi", "hello", "how are you?"]
    assert copied[1].stats == {"completion_tokens": 1}
    assert store.inspection(copied[1].id) == store.inspection(ids[1]) and store.inspection(ids[1])
    assert not {m.id for m in copied} & set(ids)
    store.add_message(fork.id, "assistant", "better")
    assert contents(store.messages(1)) == ["hi", "hello", "how are you?", "well"]  # the original is untouched
    assert contents(store.messages(fork.id))[-1] == "better"
    assert {h.conversation_id for h in store.search("better")} == {fork.id}
    with pytest.raises(ValueError):
        store.fork(10_000)


def test_branch_writes_on_a_full_disk_raise_history_full_and_change_nothing(tmp_path):
    store = HistoryStore(tmp_path / "h.sqlite3")
    ids = conversation_of(store, "hi", "hello " + PIECE, "how are you?", "well " + PIECE)
    other = store.add_message(1, "assistant", PIECE * 2, sibling_of=ids[1])
    fill_up(store)
    with pytest.raises(HistoryFull):
        store.fork(other.id)
    with pytest.raises(HistoryFull):
        store.add_message(1, "user", PIECE * 3, sibling_of=ids[0])
    assert [c.id for c in store.conversations()] == [1]
    assert [m.id for m in store.messages(1)] == [ids[0], other.id]
    make_room(store)
    store.show_branch(ids[3])
    assert [m.id for m in store.messages(1)] == ids
