"""Full-text search over the history: SQLite FTS5 queries built from what the user typed.

Two FTS5 indexes with external content (they hold the index, not a second copy
of the text): message_search over messages.content and conversation_search over
conversations.title. Triggers keep them right; a message is indexed once it is
not streaming, so a reply is indexed once, when it finishes, not on every
streaming save. Every branch of a conversation is indexed (since schema 5; until
then only the shown version of a reply was), and a hit opens its branch.

Each word the user types becomes a case-insensitive prefix query ("yor" finds
"YORICK"; unicode61 folds case and accents in any script). Scripts written
without spaces between words (Chinese, Japanese, Thai) and filters FTS5 cannot
tokenize (punctuation only) are matched with LIKE instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# The search tables as schema 3 made them (its migration runs this: never edit it); schema 5 replaced
# the message triggers with BRANCH_SEARCH_TRIGGERS.
SEARCH_SCHEMA = """
CREATE VIRTUAL TABLE message_search USING fts5(content, content='messages', content_rowid='id');
CREATE VIRTUAL TABLE conversation_search USING fts5(title, content='conversations', content_rowid='id');

CREATE TRIGGER message_search_insert AFTER INSERT ON messages
WHEN new.shown = 1 AND new.status != 'streaming' BEGIN
    INSERT INTO message_search (rowid, content) VALUES (new.id, new.content);
END;
CREATE TRIGGER message_search_update AFTER UPDATE OF content, status, shown ON messages BEGIN
    INSERT INTO message_search (message_search, rowid, content)
        SELECT 'delete', old.id, old.content WHERE old.shown = 1 AND old.status != 'streaming';
    INSERT INTO message_search (rowid, content)
        SELECT new.id, new.content WHERE new.shown = 1 AND new.status != 'streaming';
END;
CREATE TRIGGER message_search_delete AFTER DELETE ON messages
WHEN old.shown = 1 AND old.status != 'streaming' BEGIN
    INSERT INTO message_search (message_search, rowid, content) VALUES ('delete', old.id, old.content);
END;

CREATE TRIGGER conversation_search_insert AFTER INSERT ON conversations BEGIN
    INSERT INTO conversation_search (rowid, title) VALUES (new.id, new.title);
END;
CREATE TRIGGER conversation_search_update AFTER UPDATE OF title ON conversations BEGIN
    INSERT INTO conversation_search (conversation_search, rowid, title) VALUES ('delete', old.id, old.title);
    INSERT INTO conversation_search (rowid, title) VALUES (new.id, new.title);
END;
CREATE TRIGGER conversation_search_delete AFTER DELETE ON conversations BEGIN
    INSERT INTO conversation_search (conversation_search, rowid, title) VALUES ('delete', old.id, old.title);
END;

INSERT INTO message_search (rowid, content)
    SELECT id, content FROM messages WHERE shown = 1 AND status != 'streaming';
INSERT INTO conversation_search (conversation_search) VALUES ('rebuild');
"""

# Schema 5: every branch is found, so a message is indexed whichever branch is shown.
BRANCH_SEARCH_TRIGGERS = """
DROP TRIGGER message_search_insert;
DROP TRIGGER message_search_update;
DROP TRIGGER message_search_delete;
CREATE TRIGGER message_search_insert AFTER INSERT ON messages
WHEN new.status != 'streaming' BEGIN
    INSERT INTO message_search (rowid, content) VALUES (new.id, new.content);
END;
CREATE TRIGGER message_search_update AFTER UPDATE OF content, status ON messages BEGIN
    INSERT INTO message_search (message_search, rowid, content)
        SELECT 'delete', old.id, old.content WHERE old.status != 'streaming';
    INSERT INTO message_search (rowid, content)
        SELECT new.id, new.content WHERE new.status != 'streaming';
END;
CREATE TRIGGER message_search_delete AFTER DELETE ON messages
WHEN old.status != 'streaming' BEGIN
    INSERT INTO message_search (message_search, rowid, content) VALUES ('delete', old.id, old.content);
END;
INSERT INTO message_search (rowid, content) SELECT id, content FROM messages WHERE shown = 0 AND status != 'streaming';
"""

# Scripts without spaces between words: unicode61 would make a whole sentence one token.
UNSPACED_SCRIPT = re.compile("[\u0e00-\u0e7f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
SNIPPET_WORDS = 12


@dataclass
class SearchHit:
    conversation_id: int
    conversation_title: str
    message_id: int | None  # None: the conversation's title matched
    snippet: str


def fts_query(text: str) -> str | None:
    """An FTS5 query matching every word as a prefix, or None where LIKE must do."""
    words = text.split()
    if not words or UNSPACED_SCRIPT.search(text) or not any(re.search(r"\w", word) for word in words):
        return None
    return " ".join('"' + word.replace('"', '""') + '"*' for word in words if re.search(r"\w", word))


def like_pattern(text: str) -> str:
    escaped = text.strip().lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def conversation_ids_sql(query: str | None, text: str) -> tuple[str, tuple]:
    """SQL selecting the ids of conversations whose title or messages (in any branch) match."""
    if query is not None:
        return (
            "SELECT rowid FROM conversation_search WHERE conversation_search MATCH ? "
            "UNION SELECT m.conversation_id FROM messages m "
            "WHERE m.id IN (SELECT rowid FROM message_search WHERE message_search MATCH ?)"
        ), (query, query)
    pattern = like_pattern(text)
    return (
        "SELECT id FROM conversations WHERE lower(title) LIKE ? ESCAPE '\\' "
        "UNION SELECT conversation_id FROM messages WHERE status != 'streaming' AND lower(content) LIKE ? ESCAPE '\\'"
    ), (pattern, pattern)


def search_sql(query: str | None, text: str, limit: int) -> list[tuple[str, tuple]]:
    """Title hits first, then message hits newest first; each row: conversation id, title, message id, snippet."""
    titles: tuple[str, tuple]
    messages: tuple[str, tuple]
    if query is not None:
        titles = (
            "SELECT c.id, c.title, NULL, c.title FROM conversation_search s JOIN conversations c ON c.id = s.rowid "
            "WHERE conversation_search MATCH ? ORDER BY s.rowid DESC LIMIT ?",
            (query, limit),
        )
        messages = (
            "SELECT c.id, c.title, s.rowid, snippet(message_search, 0, '', '', '…', ?) "
            "FROM message_search s JOIN messages m ON m.id = s.rowid JOIN conversations c ON c.id = m.conversation_id "
            "WHERE message_search MATCH ? ORDER BY s.rowid DESC LIMIT ?",
            (SNIPPET_WORDS, query, limit),
        )
        return [titles, messages]
    pattern = like_pattern(text)
    titles = (
        "SELECT id, title, NULL, title FROM conversations WHERE lower(title) LIKE ? ESCAPE '\\' "
        "ORDER BY id DESC LIMIT ?",
        (pattern, limit),
    )
    messages = (
        "SELECT c.id, c.title, m.id, m.content FROM messages m JOIN conversations c ON c.id = m.conversation_id "
        "WHERE m.status != 'streaming' AND lower(m.content) LIKE ? ESCAPE '\\' "
        "ORDER BY m.id DESC LIMIT ?",
        (pattern, limit),
    )
    return [titles, messages]


def snippet_around(content: str, text: str, width: int = 80) -> str:
    """A LIKE hit's snippet: the text around the first match, on one line."""
    at = max(content.lower().find(text.strip().lower()), 0)
    start = max(at - width // 3, 0)
    piece = " ".join(content[start : start + width].split())
    return ("…" if start else "") + piece + ("…" if start + width < len(content) else "")
