"""The history at scale and when things go wrong, against real SQLite files:
migration from v2, unusable files, branches, paging, packed inspection data,
full-text search, two instances on one file."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time

import pytest

import chatapp.history.store as history
from chatapp.history import (
    INSPECTION_KEPT,
    MIGRATIONS,
    SCHEMA_VERSION,
    STALE_AFTER_S,
    HistoryStore,
    HistoryUnavailable,
    SchemaTooNew,
    Status,
    move_aside,
)

NOBODY = 65534


def old_step(text: str) -> dict:
    """A step as v2 stored it: no token ids, ranks or cut_by."""
    return {
        "text": text,
        "candidates": [
            {"text": text, "raw_prob": 0.6, "final_prob": 0.75, "drawn": True},
            {"text": " maybe", "raw_prob": 0.2, "final_prob": 0.25, "drawn": False},
        ],
    }


def new_step(token_id: int, text: str) -> dict:
    return {
        "token_id": token_id,
        "text": text,
        "rank": 1,
        "candidates": [
            {"id": 7, "text": " so", "raw_prob": 0.41234, "final_prob": 0.55, "drawn": False, "cut_by": None},
            {"id": token_id, "text": text, "raw_prob": 0.30001, "final_prob": 0.45, "drawn": True, "cut_by": None},
            {"id": 9, "text": "ü", "raw_prob": 0.00123, "final_prob": 0.0, "drawn": False, "cut_by": "top_p"},
        ],
    }


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def v2_file(path, replies_with_inspection: int = 3):
    """A history as chatapp wrote it before v3: the shipped schema SQL, JSON inspection per reply."""
    db = sqlite3.connect(path)
    db.executescript(MIGRATIONS[0] + MIGRATIONS[1] + "; PRAGMA user_version = 2;")
    db.execute("INSERT INTO conversations (title, created_at, updated_at) VALUES ('Yorick', 0, 0)")
    for index in range(replies_with_inspection):
        db.execute(
            "INSERT INTO messages (conversation_id, role, content, created_at) VALUES (1, 'user', ?, 0)",
            (f"question {index} about Elsinore",),
        )
        db.execute(
            "INSERT INTO messages (conversation_id, role, content, created_at, inspection) "
            "VALUES (1, 'assistant', ?, 0, ?)",
            (f"answer {index}", json.dumps([old_step("answer"), old_step(f" {index}")])),
        )
    db.execute(
        "INSERT INTO messages (conversation_id, role, content, status, created_at) "
        "VALUES (1, 'assistant', 'half', 'streaming', 0)"
    )
    db.commit()
    db.close()


# --- migration ---


def test_a_v2_history_migrates_with_its_messages_inspection_and_search(tmp_path, monkeypatch):
    monkeypatch.setattr(history, "INSPECTION_KEPT", 2)
    path = tmp_path / "history.sqlite3"
    v2_file(path, replies_with_inspection=3)
    store = HistoryStore(path)
    assert store.schema_version == SCHEMA_VERSION == 5
    shown = store.messages(1)
    assert [m.content for m in shown] == [
        "question 0 about Elsinore",
        "answer 0",
        "question 1 about Elsinore",
        "answer 1",
        "question 2 about Elsinore",
        "answer 2",
        "half",
    ]
    assert shown[-1].status == Status.INTERRUPTED and store.recovered == 1
    assert all((m.branch, m.branch_count, m.model, m.inspection) == (1, 1, None, None) for m in shown)
    replies = [m for m in shown if m.role == "assistant"]
    assert store.inspection(replies[0].id) is None  # only the newest INSPECTION_KEPT replies keep theirs
    steps = store.inspection(replies[2].id)
    assert [s["text"] for s in steps] == ["answer", " 2"]
    assert steps[0]["token_id"] == -1 and steps[0]["rank"] == -1
    assert steps[0]["candidates"][1] == {
        "id": -1,
        "text": " maybe",
        "raw_prob": pytest.approx(0.2, abs=1e-3),
        "final_prob": pytest.approx(0.25, abs=1e-3),
        "drawn": False,
        "cut_by": None,
    }
    assert store._db.execute("SELECT COUNT(*) FROM messages WHERE inspection IS NOT NULL").fetchone()[0] == 0
    assert [c.title for c in store.conversations("elsin")] == ["Yorick"]
    assert {hit.message_id for hit in store.search("elsinore")} == {m.id for m in shown if m.role == "user"}


# --- files that cannot be used ---


def history_of_many_messages(path, count: int, template: str):
    """A closed history file with one conversation of `count` user messages: template.format(index),
    "{0}" for the index."""
    store = HistoryStore(path)
    conversation = store.create_conversation()
    for index in range(count):
        store.add_message(conversation.id, "user", template.format(index))
    store.close()
    return path


def damaged_files(tmp_path):
    good = history_of_many_messages(tmp_path / "good.sqlite3", 200, "line {0} " * 40)
    data = good.read_bytes()
    assert len(data) > 16 * 4096
    future = tmp_path / "future.sqlite3"
    db = sqlite3.connect(future)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    scrambled_schema = bytearray(data)
    scrambled_schema[100:4096] = bytes(range(256)) * 15 + bytes(range(156))
    return {
        "corrupt": bytes(scrambled_schema),
        "truncated": data[: len(data) // 2],
        "not SQLite": b"# my notes\n" * 500,
        "future schema": future.read_bytes(),
    }


@pytest.mark.parametrize("kind", ["corrupt", "truncated", "not SQLite", "future schema"])
def test_an_unusable_file_is_refused_at_open_and_can_be_moved_aside(tmp_path, kind):
    path = tmp_path / "history.sqlite3"
    path.write_bytes(damaged_files(tmp_path)[kind])
    with pytest.raises(HistoryUnavailable) as refused:
        HistoryStore(path)
    error = refused.value
    assert error.can_move_aside is True and error.path == path
    assert "\n" not in error.reason and str(path) in error.reason and "move it aside" in error.reason
    assert isinstance(error, SchemaTooNew) == (kind == "future schema")
    before = path.read_bytes()
    aside = move_aside(path)
    assert aside.read_bytes() == before
    fresh = HistoryStore(path)  # a new history where the old one was
    assert fresh.conversations() == []


def open_as_nobody(path) -> tuple[str, bool, str]:
    """HistoryStore(path) in a forked child without root's power to ignore permissions."""
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, never return into pytest
        try:
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            try:
                HistoryStore(path)
                result = ("opened", False, "")
            except HistoryUnavailable as error:
                result = (type(error).__name__, error.can_move_aside, error.reason)
            os.write(writer, json.dumps(result).encode())
        finally:
            os._exit(0)
    os.close(writer)
    with os.fdopen(reader) as pipe:
        output = pipe.read()
    os.waitpid(pid, 0)
    return tuple(json.loads(output))


def open_without_permission(path) -> tuple[str, bool, str]:
    if os.geteuid() == 0:
        return open_as_nobody(path)
    try:
        HistoryStore(path)
    except HistoryUnavailable as error:
        return type(error).__name__, error.can_move_aside, error.reason
    return "opened", False, ""


@pytest.mark.parametrize("what", ["read-only folder", "read-only file"])
def test_a_history_that_cannot_be_written_is_refused_and_not_offered_to_move_aside(tmp_path, what):
    folder = tmp_path / "data"
    folder.mkdir()
    path = folder / "history.sqlite3"
    store = HistoryStore(path)
    store.create_conversation()
    store.close()
    tmp_path.chmod(0o755)
    for item in (folder, path):
        os.chown(item, NOBODY, NOBODY) if os.geteuid() == 0 else None
    if what == "read-only folder":
        folder.chmod(0o555)
    else:
        path.chmod(0o400)
    try:
        kind, can_move_aside, reason = open_without_permission(path)
    finally:
        folder.chmod(0o755)
    assert kind == "HistoryUnavailable", reason
    assert can_move_aside is False
    assert str(path) in reason and "permissions" in reason and "\n" not in reason


def test_the_open_check_reads_no_more_than_the_header_and_schema(tmp_path):
    path = history_of_many_messages(tmp_path / "history.sqlite3", 300, "message {0} " * 30)
    data = bytearray(path.read_bytes())
    page_size = int.from_bytes(data[16:18], "big")
    data[-3 * page_size :] = b"\xff" * (3 * page_size)  # damage where an open never looks
    path.write_bytes(bytes(data))
    HistoryStore(path).close()  # opens: damage in data pages shows when they are read, as a HistoryError


# --- branches ---


def test_a_regenerated_reply_is_a_branch_and_the_old_one_can_be_shown_again(tmp_path):
    store = HistoryStore(tmp_path / "h.sqlite3")
    conversation = store.create_conversation()
    question = store.add_message(conversation.id, "user", "to be?")
    first = store.add_message(conversation.id, "assistant", "Not to be.", model="small")
    later = store.add_message(conversation.id, "user", "and then?")
    second = store.add_message(
        conversation.id, "assistant", "", status=Status.STREAMING, model="big", sibling_of=first.id
    )
    assert (second.branch, second.branch_count, second.model, second.parent_id) == (2, 2, "big", question.id)
    store.finish_message(second.id, "To be.", Status.COMPLETE)
    shown = store.messages(conversation.id)
    assert [m.id for m in shown] == [question.id, second.id]  # the new branch has no "and then?" yet
    assert (shown[1].branch, shown[1].branch_count, shown[1].model) == (2, 2, "big")
    assert [(v.id, v.branch, v.model) for v in store.branches(first.id)] == [
        (first.id, 1, "small"),
        (second.id, 2, "big"),
    ]
    assert store.branches(second.id) == store.branches(first.id)
    found = [h.message_id for h in store.search("to be")]
    assert found == [None, second.id, first.id, question.id]  # the title, then messages of every branch
    again = store.show_branch(first.id)
    assert (again.id, again.branch, again.branch_count) == (first.id, 1, 2)
    assert [m.id for m in store.messages(conversation.id)] == [question.id, first.id, later.id]  # its branch goes on
    assert store.message_count(conversation.id) == 3
    third = store.add_message(conversation.id, "assistant", "Maybe.", sibling_of=second.id)
    assert (third.branch, third.branch_count) == (3, 3)
    assert [m.id for m in store.messages(conversation.id)] == [question.id, third.id]
    with pytest.raises(ValueError):
        store.add_message(store.create_conversation().id, "assistant", "", sibling_of=first.id)
    with pytest.raises(ValueError):
        store.show_branch(10_000)


def test_deleting_a_conversation_deletes_every_branch_and_its_inspection(tmp_path):
    store = HistoryStore(tmp_path / "h.sqlite3")
    conversation = store.create_conversation()
    store.add_message(conversation.id, "user", "edited")
    reply = store.add_message(conversation.id, "assistant", "", status=Status.STREAMING)
    store.finish_message(reply.id, "old", Status.COMPLETE, inspection=[new_step(5, "old")])
    branch = store.add_message(conversation.id, "assistant", "", status=Status.STREAMING, sibling_of=reply.id)
    store.finish_message(branch.id, "new", Status.COMPLETE, inspection=[new_step(6, "new")])
    store.delete(conversation.id)
    assert store.branches(reply.id) == [] and store.inspection(branch.id) is None
    assert store._db.execute("SELECT COUNT(*) FROM inspections").fetchone()[0] == 0
    assert store.search("new") == [] and store.search("old") == [] and store.search("edited") == []


# --- paging ---


def big_conversation(store, count: int = 1000):
    conversation = store.create_conversation()
    ids = [
        store.add_message(conversation.id, "user" if i % 2 == 0 else "assistant", f"message {i}").id
        for i in range(count)
    ]
    return conversation, ids


def test_pages_of_a_long_conversation_come_oldest_first_and_use_an_index(tmp_path):
    store = HistoryStore(tmp_path / "h.sqlite3")
    other = store.create_conversation()
    store.add_message(other.id, "user", "elsewhere")
    conversation, ids = big_conversation(store)
    store.add_message(other.id, "user", "elsewhere, later")
    last = store.messages(conversation.id, limit=40)
    assert [m.id for m in last] == ids[-40:]
    assert [m.id for m in store.last_messages(conversation.id, 40)] == ids[-40:]
    earlier = store.messages(conversation.id, before=last[0].id, limit=40)
    assert [m.id for m in earlier] == ids[-80:-40]
    assert [m.id for m in store.messages(conversation.id, before=ids[3], limit=40)] == ids[:3]
    assert [m.id for m in store.messages(conversation.id, before=ids[10])] == ids[:10]
    assert store.message_count(conversation.id) == 1000
    assert [m.id for m in store.messages(conversation.id, since=ids[-3])] == ids[-3:]
    branch = store.add_message(conversation.id, "assistant", "rewritten", sibling_of=ids[-39])
    page = store.messages(conversation.id, limit=40)
    assert [m.id for m in page] == ids[-78:-39] + [branch.id]  # the new branch ends where it starts
    assert store.message_count(conversation.id) == 1000 - 38
    store.show_branch(ids[-39])
    assert [m.id for m in store.messages(conversation.id, limit=40)] == ids[-40:]
    plan = " ".join(
        row[3]
        for row in store._db.execute(
            f"EXPLAIN QUERY PLAN SELECT {history.MESSAGE_COLUMNS} FROM messages m "
            "WHERE m.conversation_id = 1 AND m.shown = 1 ORDER BY m.slot DESC LIMIT 40"
        )
    )
    assert "USING" in plan and "INDEX" in plan and "TEMP B-TREE" not in plan, plan


# --- inspection ---


def test_inspection_is_packed_loaded_only_when_asked_for_and_round_trips(tmp_path):
    store = HistoryStore(tmp_path / "h.sqlite3")
    conversation = store.create_conversation()
    reply = store.add_message(conversation.id, "assistant", "", status=Status.STREAMING)
    steps = [new_step(100 + i % 50, f" word{i % 50}") for i in range(400)] + [old_step("legacy")]
    store.finish_message(reply.id, "many words", Status.COMPLETE, inspection=steps)
    assert store.messages(conversation.id)[0].inspection is None  # messages() leaves it
    loaded = store.inspection(reply.id)
    assert len(loaded) == len(steps)
    for original, back in zip(steps[:-1], loaded[:-1]):
        assert (back["token_id"], back["text"], back["rank"]) == (
            original["token_id"],
            original["text"],
            original["rank"],
        )
        for a, b in zip(original["candidates"], back["candidates"]):
            assert (b["id"], b["text"], b["drawn"], b["cut_by"]) == (a["id"], a["text"], a["drawn"], a["cut_by"])
            assert b["raw_prob"] == pytest.approx(a["raw_prob"], abs=1e-3)
            assert b["final_prob"] == pytest.approx(a["final_prob"], abs=1e-3)
    assert loaded[-1]["token_id"] == -1 and loaded[-1]["candidates"][0]["cut_by"] is None
    assert store.message(reply.id).inspection == loaded  # one message: filled, as before
    packed = store._db.execute("SELECT length(data) FROM inspections").fetchone()[0]
    candidates = sum(len(step["candidates"]) for step in steps)
    assert packed / candidates < 20, packed / candidates
    assert len(json.dumps(steps)) / packed > 20


def test_only_the_newest_replies_keep_their_inspection_data(tmp_path, monkeypatch):
    monkeypatch.setattr(history, "INSPECTION_KEPT", 3)
    store = HistoryStore(tmp_path / "h.sqlite3")
    conversation = store.create_conversation()
    replies = [store.add_message(conversation.id, "assistant", "", status=Status.STREAMING) for _ in range(5)]
    for reply in replies:
        store.finish_message(reply.id, "x", Status.COMPLETE, inspection=[new_step(1, "x")])
    assert [store.inspection(r.id) is not None for r in replies] == [False, False, True, True, True]
    store.reopen_message(replies[0].id)  # continued: newest again
    store.finish_message(replies[0].id, "xy", Status.COMPLETE, inspection=[new_step(2, "y")])
    assert [store.inspection(r.id) is not None for r in replies] == [True, False, False, True, True]
    assert INSPECTION_KEPT >= 100


# --- full-text search ---


def searchable_store(tmp_path):
    store = HistoryStore(tmp_path / "h.sqlite3")
    texts = {
        "hamlet": ["Alas, poor YORICK! I knew him, Horatio", "Something is rotten in the state of Denmark"],
        "russian": ["Быть или не быть, вот в чём вопрос"],
        "french": ["Être ou ne pas être: c'est là la question, au café"],
        "chinese": ["生存还是毁灭，这是一个问题"],
        "symbols": ['He said "AND" -- NEAR(x) * 100% of_it', "?!"],
    }
    ids = {}
    for title, contents in texts.items():
        conversation = store.create_conversation(title=title.capitalize())
        ids[title] = conversation.id
        for content in contents:
            store.add_message(conversation.id, "assistant", content)
    return store, ids


@pytest.mark.parametrize(
    "text, expected",
    [
        ("yor", ["hamlet"]),
        ("YORICK horatio", ["hamlet"]),
        ("yorick denmark", []),
        ("rott den", ["hamlet"]),
        ("быть", ["russian"]),
        ("ВОПРОС", ["russian"]),
        ("etre", ["french"]),
        ("CAFÉ", ["french"]),
        ("这是", ["chinese"]),
        ('"and"', ["symbols"]),
        ("near(x)", ["symbols"]),
        ("100%", ["symbols"]),
        ("of_it", ["symbols"]),
        ("?!", ["symbols"]),
        ("*", ["symbols"]),
        ("~~", []),
        ("chin", ["chinese"]),
    ],
)
def test_the_filter_matches_word_prefixes_in_any_case_and_script(tmp_path, text, expected):
    store, ids = searchable_store(tmp_path)
    assert sorted(c.id for c in store.conversations(text)) == sorted(ids[name] for name in expected)


def test_search_finds_messages_with_a_snippet_and_forgets_deleted_ones(tmp_path):
    store, ids = searchable_store(tmp_path)
    hits = store.search("rotten")
    assert [(h.conversation_id, h.conversation_title) for h in hits] == [(ids["hamlet"], "Hamlet")]
    assert "rotten" in hits[0].snippet and hits[0].message_id is not None
    store.add_message(ids["hamlet"], "assistant", "Words\n\nwords,\n   words about rotten things")
    assert store.search("rotten")[0].snippet == "Words words, words about rotten things"  # one line
    assert store.search("这是")[0].snippet.startswith("生存")
    title_hit = store.search("russ")[0]
    assert (title_hit.conversation_id, title_hit.message_id) == (ids["russian"], None)
    store.rename(ids["russian"], "Shakespeare translated")
    assert store.search("russ") == [] and store.search("translat")[0].conversation_id == ids["russian"]
    store.delete(ids["hamlet"])
    assert store.search("rotten") == [] and store.conversations("yorick") == []
    assert store.search("thing") == []
    assert store.search("") == [] and len(store.search("s", limit=2)) == 2
    index_hits = "SELECT COUNT(*) FROM message_search WHERE message_search MATCH ?"  # the index alone, no join
    assert store._db.execute(index_hits, ("rotten",)).fetchone()[0] == 0
    assert store._db.execute(index_hits, ("translated",)).fetchone()[0] == 0  # titles have their own index
    store._db.execute("INSERT INTO message_search (message_search, rank) VALUES ('integrity-check', 1)")


def test_a_streaming_reply_is_found_once_it_finishes_and_then_with_its_final_text(tmp_path):
    store = HistoryStore(tmp_path / "h.sqlite3")
    conversation = store.create_conversation()
    reply = store.add_message(conversation.id, "assistant", "", status=Status.STREAMING)
    store.update_content(reply.id, "Ophelia sings")
    assert store.search("ophelia") == []
    store.finish_message(reply.id, "Ophelia drowns", Status.COMPLETE)
    assert [h.message_id for h in store.search("drown")] == [reply.id] and store.search("sings") == []
    store.reopen_message(reply.id)
    store.finish_message(reply.id, "Ophelia drowns, and Laertes weeps", Status.STOPPED)
    assert [h.message_id for h in store.search("laert")] == [reply.id]
    store._db.execute("INSERT INTO message_search (message_search, rank) VALUES ('integrity-check', 1)")


# --- two instances ---


def test_a_second_store_leaves_a_live_writers_reply_and_recovers_dead_ones(tmp_path):
    path = tmp_path / "h.sqlite3"
    first = HistoryStore(path)
    conversation = first.create_conversation()
    live = first.add_message(conversation.id, "assistant", "", status=Status.STREAMING)
    first.update_content(live.id, "still going")
    dead = first.add_message(conversation.id, "assistant", "", status=Status.STREAMING)
    stale = first.add_message(conversation.id, "assistant", "", status=Status.STREAMING)
    remote = first.add_message(conversation.id, "assistant", "", status=Status.STREAMING)
    first._db.execute("UPDATE messages SET owner_pid = ? WHERE id = ?", (dead_pid(), dead.id))
    first._db.execute("UPDATE messages SET heartbeat_at = ? WHERE id = ?", (time.time() - STALE_AFTER_S - 1, stale.id))
    first._db.execute(
        "UPDATE messages SET owner_host = ?, owner_pid = 1 WHERE id = ?", (socket.gethostname() + "-other", remote.id)
    )
    second = HistoryStore(path)
    assert second.recovered == 2
    statuses = {m.id: m.status for m in second.messages(conversation.id)}
    assert statuses == {
        live.id: Status.STREAMING,
        dead.id: Status.INTERRUPTED,
        stale.id: Status.INTERRUPTED,
        remote.id: Status.STREAMING,
    }
    first.update_content(live.id, "still going, and done")
    first.finish_message(live.id, "still going, and done", Status.COMPLETE)
    assert second.message(live.id).status == Status.COMPLETE and second.message(live.id).content.endswith("done")


def test_a_heartbeat_keeps_a_quiet_reply_alive(tmp_path):
    path = tmp_path / "h.sqlite3"
    store = HistoryStore(path)
    conversation = store.create_conversation()
    reply = store.add_message(conversation.id, "assistant", "", status=Status.STREAMING)
    store._db.execute("UPDATE messages SET heartbeat_at = ? WHERE id = ?", (time.time() - STALE_AFTER_S - 1, reply.id))
    store.heartbeat(reply.id)
    assert HistoryStore(path).recovered == 0


def test_a_reply_whose_conversation_was_deleted_while_it_streamed_finishes_quietly(tmp_path):
    store = HistoryStore(tmp_path / "h.sqlite3")
    conversation = store.create_conversation()
    reply = store.add_message(conversation.id, "assistant", "", status=Status.STREAMING)
    store.delete(conversation.id)
    store.finish_message(
        reply.id, "too late", Status.COMPLETE, inspection=[new_step(1, "late")]
    )  # no error: nothing to save
    assert store.message(reply.id) is None and store.inspection(reply.id) is None


def test_a_control_token_written_by_its_name_stays_one_when_stored(tmp_path):
    store = HistoryStore(tmp_path / "h.sqlite3")
    conversation = store.create_conversation()
    reply = store.add_message(conversation.id, "assistant", "", status=Status.STREAMING)
    end = {"token_id": 7, "text": "<|im_end|>", "control": True, "rank": 1, "candidates": []}
    end["candidates"] = [
        {"id": 7, "text": "<|im_end|>", "control": True, "raw_prob": 0.9, "final_prob": 1.0, "drawn": True},
        {"id": 8, "text": "<|im_end|>", "raw_prob": 0.1, "final_prob": 0.0, "drawn": False, "cut_by": "greedy"},
    ]
    store.finish_message(reply.id, "done", Status.COMPLETE, inspection=[new_step(100, " done"), end])
    plain, back = store.inspection(reply.id)
    assert "control" not in plain and back["control"] and back["text"] == "<|im_end|>"
    assert back["candidates"][0]["control"] and "control" not in back["candidates"][1]  # typed text, not the token
