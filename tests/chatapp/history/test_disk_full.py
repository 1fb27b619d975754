"""Saving when the disk is full (a real SQLite file held at its size with
PRAGMA max_page_count, which gives SQLITE_FULL), and private export files."""

from __future__ import annotations

import os
import stat
import threading

import pytest

import chatapp.tui.generation as generation
from chatapp.history import HistoryFull, HistoryStore, Status
from chatapp.tui.export import export_files
from chatapp.tui.generation import ReplyDone, ReplyJob, ReplyPiece, ReplySaveFailed
from model.inference.sampling import SamplingParams
from model.text.chat_format import Message
from tests.helpers.fake_backend import FakeBackend

PIECE = "x" * 3000  # each piece needs a new page: a full database shows at once


def fill_up(store: HistoryStore) -> None:
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count = {pages}")


def make_room(store: HistoryStore) -> None:
    store._db.execute("PRAGMA max_page_count = 1000000")


def test_a_full_disk_raises_history_full_and_the_store_recovers_when_room_returns(tmp_path):
    store = HistoryStore(tmp_path / "h.sqlite3")
    conversation = store.create_conversation()
    reply = store.add_message(conversation.id, "assistant", "", status=Status.STREAMING)
    fill_up(store)
    with pytest.raises(HistoryFull) as full:
        store.update_content(reply.id, PIECE * 3)
    assert "disk is full" in full.value.reason and "\n" not in full.value.reason
    with pytest.raises(HistoryFull):
        store.add_message(conversation.id, "user", PIECE * 3)
    assert store.message(reply.id).content == "" and store.message_count(conversation.id) == 1
    make_room(store)
    store.update_content(reply.id, PIECE * 3)
    store.finish_message(reply.id, PIECE * 3, Status.COMPLETE)
    assert store.message(reply.id).status == Status.COMPLETE


def run_job_that_fills_the_disk_midway(tmp_path, monkeypatch):
    monkeypatch.setattr(generation, "SAVE_INTERVAL_S", 0.0)
    store = HistoryStore(tmp_path / "h.sqlite3")
    conversation = store.create_conversation()
    reply = store.add_message(conversation.id, "assistant", "", status=Status.STREAMING)
    engine = FakeBackend(replies=[[PIECE] * 6], hold_after=2)
    job = ReplyJob(engine, store, conversation.id, reply.id, [Message("user", "talk")], SamplingParams(max_tokens=50))
    reports = []
    worker = threading.Thread(target=job.run, args=(reports.append,))
    worker.start()
    assert engine.holding.wait(10)
    fill_up(store)
    engine.release()
    worker.join(10)
    assert not worker.is_alive()
    return store, job, reports


def test_a_reply_streams_on_through_a_full_disk_and_is_saved_when_room_returns(tmp_path, monkeypatch):
    store, job, reports = run_job_that_fills_the_disk_midway(tmp_path, monkeypatch)
    failures = [r for r in reports if isinstance(r, ReplySaveFailed)]
    assert len(failures) == 1 and failures[0].message_id == job.message_id
    assert failures[0].reason == "the disk is full: the reply is kept on screen and saved when space returns"
    assert sum(isinstance(r, ReplyPiece) for r in reports) == 6 and isinstance(reports[-1], ReplyDone)
    assert job.text == PIECE * 6 and job.status == Status.COMPLETE and job.unsaved
    saved = store.message(job.message_id)
    assert (saved.status, saved.content) == (Status.STREAMING, PIECE * 2)  # what was saved before the disk filled
    assert job.save() is False and job.unsaved
    make_room(store)
    assert job.save() is True and not job.unsaved
    saved = store.message(job.message_id)
    assert (saved.status, saved.content, saved.stats["completion_tokens"]) == (Status.COMPLETE, PIECE * 6, 6)
    assert len(store.inspection(job.message_id)) == 6
    assert len([r for r in reports if isinstance(r, ReplySaveFailed)]) == 1  # reported once


def test_a_reply_saved_without_trouble_is_not_unsaved(tmp_path, monkeypatch):
    monkeypatch.setattr(generation, "SAVE_INTERVAL_S", 0.0)
    store = HistoryStore(tmp_path / "h.sqlite3")
    conversation = store.create_conversation()
    reply = store.add_message(conversation.id, "assistant", "", status=Status.STREAMING)
    job = ReplyJob(FakeBackend(), store, conversation.id, reply.id, [Message("user", "hi")], SamplingParams())
    reports = []
    job.run(reports.append)
    assert not job.unsaved and not any(isinstance(r, ReplySaveFailed) for r in reports)
    assert store.message(reply.id).status == Status.COMPLETE and job.save() is True


def test_exported_files_are_private_from_the_start(tmp_path):
    store = HistoryStore(tmp_path / "h.sqlite3")
    conversation = store.create_conversation(title="Secrets")
    store.add_message(conversation.id, "user", "my diary")
    folder = tmp_path / "exports"
    folder.mkdir()
    stale = folder / f"{conversation.id}-secrets.md"
    stale.write_text("old")
    stale.chmod(0o644)
    previous = os.umask(0)  # the most permissive umask: the mode must still be 0600
    try:
        paths = export_files(folder, store.conversation(conversation.id), store.messages(conversation.id))
    finally:
        os.umask(previous)
    assert [stat.S_IMODE(path.stat().st_mode) for path in paths] == [0o600, 0o600]
    assert stale in paths and "my diary" in stale.read_text()
