"""The claims that keep two windows out of one conversation (chatapp/tui/claims.py), on their own."""

from __future__ import annotations

from chatapp.history import HistoryStore
from chatapp.tui.claims import ConversationClaims


def test_a_conversation_is_held_by_one_window_at_a_time(tmp_path):
    history = tmp_path / "history.sqlite3"
    one, two = ConversationClaims(history), ConversationClaims(history)
    assert one.claim(1) and one.claim(1)  # claiming again what it holds
    assert not two.claim(1) and two.held_elsewhere(1)
    assert two.claim(2) and one.held_elsewhere(2) and not two.held_elsewhere(2)
    assert not one.held_elsewhere(1)
    one.keep_only({3})
    assert two.claim(1)
    two.release_all()
    assert one.claim(1) and one.claim(2)


def test_a_deleted_conversation_leaves_no_lock_file(tmp_path):
    history = tmp_path / "history.sqlite3"
    claims = ConversationClaims(history)
    assert claims.claim(7)
    assert (tmp_path / "history.sqlite3.open" / "7.lock").exists()
    claims.forget(7)
    assert not (tmp_path / "history.sqlite3.open" / "7.lock").exists()
    assert ConversationClaims(history).claim(7)


def test_an_in_memory_history_claims_nothing():
    for claims in (ConversationClaims(None), ConversationClaims(HistoryStore.in_memory().path)):
        assert claims.folder is None and claims.claim(1) and not claims.held_elsewhere(1)
    other = ConversationClaims(None)
    assert other.claim(1)
