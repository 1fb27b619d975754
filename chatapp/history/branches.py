"""Conversations as trees: the mechanics behind HistoryStore's branches (store.py), on its connection,
inside its transactions.

Each message has a parent (the message before it; none for the first); siblings are the branches at that
point and share a `slot` (the id of the first of them), which grows along every branch. `chosen` marks
the sibling a branch goes on with, `shown` every message of the branch on screen (store.py's
_migrate_to_v5 made schema 4's reply versions branches of one tree).
"""

from __future__ import annotations

import sqlite3

# A message and its ancestors (UNION, not UNION ALL: a damaged file's loop ends).
ANCESTORS = (
    "WITH RECURSIVE up(id) AS (SELECT ? UNION SELECT m.parent_id FROM messages m JOIN up ON m.id = up.id "
    "WHERE m.parent_id IS NOT NULL) SELECT id FROM up"
)
ANCESTOR_SLOTS = f"SELECT id, slot FROM messages WHERE id IN ({ANCESTORS})"


def show_path_through(db: sqlite3.Connection, conversation_id: int, message_id: int) -> None:
    """Show the branch through this message: it and its ancestors become the chosen ones among their
    siblings, and below it the branch goes on through the chosen children. Only the rows that change
    are written: stepping between two replies rewrites a few rows, not the conversation."""
    ancestors = {row[0] for row in db.execute(ANCESTORS, (message_id,))}
    not_chosen = db.execute(
        "SELECT id, slot FROM messages WHERE conversation_id = ? AND chosen = 0", (conversation_id,)
    ).fetchall()
    for sibling_id, slot in not_chosen:
        if sibling_id in ancestors:
            db.execute(
                "UPDATE messages SET chosen = (id = ?) WHERE slot = ? AND chosen != (id = ?)",
                (sibling_id, slot, sibling_id),
            )
    chosen_child = dict(
        db.execute(
            "SELECT parent_id, id FROM messages WHERE conversation_id = ? AND chosen = 1 AND parent_id IS NOT NULL",
            (conversation_id,),
        ).fetchall()
    )
    path = set(ancestors)
    below = chosen_child.get(message_id)
    while below is not None and below not in path:  # (a damaged file's loop ends too)
        path.add(below)
        below = chosen_child.get(below)
    shown = {
        row[0]
        for row in db.execute("SELECT id FROM messages WHERE conversation_id = ? AND shown = 1", (conversation_id,))
    }
    db.executemany("UPDATE messages SET shown = 0 WHERE id = ?", [(i,) for i in shown - path])
    db.executemany("UPDATE messages SET shown = 1 WHERE id = ?", [(i,) for i in path - shown])


def copy_branch(db: sqlite3.Connection, message_id: int, conversation_id: int) -> None:
    """Copy the branch up to this message (its inspection data too) into another conversation, as its one
    branch; a reply still streaming is copied as interrupted."""
    slots = dict(db.execute(ANCESTOR_SLOTS, (message_id,)).fetchall())
    parent = None
    for original in sorted(slots, key=slots.__getitem__):  # first message first: slots grow down a branch
        copy = db.execute(
            "INSERT INTO messages (conversation_id, role, content, status, stats, error, created_at, model, "
            "reasoning, parent_id, shown, chosen) SELECT ?, role, content, "
            "CASE status WHEN 'streaming' THEN 'interrupted' ELSE status END, stats, error, created_at, model, "
            "reasoning, ?, 1, 1 FROM messages WHERE id = ?",
            (conversation_id, parent, original),
        ).lastrowid
        db.execute("UPDATE messages SET slot = id WHERE id = ?", (copy,))
        db.execute(
            "INSERT INTO inspections (message_id, data) SELECT ?, data FROM inspections WHERE message_id = ?",
            (copy, original),
        )
        parent = copy
