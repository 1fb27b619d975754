"""A history to search in: a match in a branch that is not shown, pages away from its end."""

from __future__ import annotations

from chatapp.history import HistoryStore
from chatapp.tui.screens.chat import PAGE_SIZE


def match_in_a_hidden_branch(store: HistoryStore):
    """(conversation, its first message, another conversation): the first message, "where is Yorick
    buried?", begins a branch of 3 pages that a newer sibling ("a new start") hides; the app is to
    start in the other conversation."""
    conversation = store.create_conversation({})
    first = store.add_message(conversation.id, "user", "where is Yorick buried?")
    for index in range(3 * PAGE_SIZE):
        store.add_message(conversation.id, "assistant" if index % 2 == 0 else "user", f"line {index}")
    store.add_message(conversation.id, "user", "a new start", sibling_of=first.id)
    other = store.create_conversation({})
    store.add_message(other.id, "user", "elsewhere")
    return conversation, first, other
