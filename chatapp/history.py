"""Conversations in one SQLite file: WAL, a schema version with migrations, mode 0600.

Every message is written when it is sent. A streaming reply is a row with
status "streaming" that the generator updates as it grows and finishes with
"complete", "stopped" (Esc), "length" or "error". A row still "streaming" when
the store opens belonged to an app that died (kill -9): it becomes
"interrupted", with every character saved so far.

One connection, shared by the UI and the generation thread behind a lock.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from chatapp.paths import data_dir

HISTORY_FILE = "history.sqlite3"
DEFAULT_TITLE = "New conversation"
TITLE_LENGTH = 48

# Each entry moves the schema one version up; never edit one that has shipped.
MIGRATIONS = [
    """
    CREATE TABLE conversations (
        id INTEGER PRIMARY KEY,
        title TEXT NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        settings TEXT NOT NULL DEFAULT '{}'
    );
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY,
        conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
        role TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
        content TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'complete',
        stats TEXT,
        error TEXT,
        created_at REAL NOT NULL
    );
    CREATE INDEX messages_by_conversation ON messages (conversation_id, id);
    """,
    """
    ALTER TABLE messages ADD COLUMN inspection TEXT;
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)

class Status:
    """A message's status: one name for each, used by the store and the app alike."""

    STREAMING = "streaming"  # a reply being generated (saved as it grows)
    COMPLETE = "complete"
    STOPPED = "stopped"  # the user pressed Esc
    LENGTH = "length"  # the token budget ran out
    ERROR = "error"
    INTERRUPTED = "interrupted"  # still streaming when the app last closed


FINAL_STATUSES = (Status.COMPLETE, Status.STOPPED, Status.LENGTH, Status.ERROR, Status.INTERRUPTED)
CONTINUABLE = (Status.LENGTH, Status.STOPPED, Status.INTERRUPTED)  # a reply that ended before its end
NOT_SENT_TO_MODEL = (Status.ERROR, Status.STREAMING)


@dataclass
class StoredMessage:
    id: int
    conversation_id: int
    role: str
    content: str
    status: str = Status.COMPLETE
    stats: dict | None = None
    error: str | None = None
    inspection: list | None = None
    created_at: float = 0.0


@dataclass
class StoredConversation:
    id: int
    title: str
    created_at: float
    updated_at: float
    settings: dict = field(default_factory=dict)


def history_path() -> Path:
    return data_dir() / HISTORY_FILE


def title_from(text: str) -> str:
    first_line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if len(first_line) > TITLE_LENGTH:
        first_line = first_line[: TITLE_LENGTH - 1].rstrip() + "…"
    return first_line or DEFAULT_TITLE


class SchemaTooNew(RuntimeError):
    pass


class HistoryStore:
    def __init__(self, path: Path | str | None = None):
        self.path = Path(path) if path else history_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600))
        os.chmod(self.path, 0o600)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._migrate()
        self.recovered = self._mark_interrupted()

    # --- set-up ---

    @property
    def schema_version(self) -> int:
        return self._db.execute("PRAGMA user_version").fetchone()[0]

    def _migrate(self) -> None:
        with self._lock:
            version = self.schema_version
            if version > SCHEMA_VERSION:
                raise SchemaTooNew(f"{self.path} was written by a newer chatapp (schema {version} > {SCHEMA_VERSION})")
            for number in range(version, SCHEMA_VERSION):
                self._db.executescript(f"BEGIN; {MIGRATIONS[number]}; PRAGMA user_version = {number + 1}; COMMIT;")

    def _mark_interrupted(self) -> int:
        with self._lock:
            cursor = self._db.execute("UPDATE messages SET status = ? WHERE status = ?", (Status.INTERRUPTED, Status.STREAMING))
            return cursor.rowcount

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- conversations ---

    def create_conversation(self, settings: dict | None = None, title: str = DEFAULT_TITLE) -> StoredConversation:
        now = time.time()
        with self._lock:
            cursor = self._db.execute(
                "INSERT INTO conversations (title, created_at, updated_at, settings) VALUES (?, ?, ?, ?)",
                (title, now, now, json.dumps(settings or {})),
            )
        return StoredConversation(cursor.lastrowid, title, now, now, dict(settings or {}))

    def conversations(self, text_filter: str = "") -> list[StoredConversation]:
        """Newest first; a filter matches titles and message text, ignoring case."""
        query = "SELECT * FROM conversations"
        args: tuple = ()
        if text_filter.strip():
            pattern = f"%{text_filter.strip().lower()}%"
            query += (" WHERE lower(title) LIKE ? OR id IN "
                      "(SELECT conversation_id FROM messages WHERE lower(content) LIKE ?)")
            args = (pattern, pattern)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY updated_at DESC, id DESC", args).fetchall()
        return [self._conversation(row) for row in rows]

    def conversation(self, conversation_id: int) -> StoredConversation | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM conversations WHERE id = ?", (conversation_id,)).fetchone()
        return self._conversation(row) if row else None

    def rename(self, conversation_id: int, title: str) -> None:
        with self._lock:
            self._db.execute("UPDATE conversations SET title = ? WHERE id = ?", (title.strip() or DEFAULT_TITLE, conversation_id))

    def delete(self, conversation_id: int) -> None:
        with self._lock:
            self._db.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))

    def save_settings(self, conversation_id: int, settings: dict) -> None:
        with self._lock:
            self._db.execute("UPDATE conversations SET settings = ? WHERE id = ?", (json.dumps(settings), conversation_id))

    def _touch(self, conversation_id: int) -> None:
        self._db.execute("UPDATE conversations SET updated_at = ? WHERE id = ?", (time.time(), conversation_id))

    # --- messages ---

    def add_message(self, conversation_id: int, role: str, content: str, status: str = Status.COMPLETE) -> StoredMessage:
        now = time.time()
        with self._lock:
            cursor = self._db.execute(
                "INSERT INTO messages (conversation_id, role, content, status, created_at) VALUES (?, ?, ?, ?, ?)",
                (conversation_id, role, content, status, now),
            )
            self._touch(conversation_id)
            if role == "user":
                self._db.execute("UPDATE conversations SET title = ? WHERE id = ? AND title = ?",
                                 (title_from(content), conversation_id, DEFAULT_TITLE))
        return StoredMessage(cursor.lastrowid, conversation_id, role, content, status, created_at=now)

    def update_content(self, message_id: int, content: str) -> None:
        """A streaming reply so far."""
        with self._lock:
            self._db.execute("UPDATE messages SET content = ? WHERE id = ?", (content, message_id))

    def reopen_message(self, message_id: int) -> None:
        """A reply that streams again (continue)."""
        with self._lock:
            self._db.execute("UPDATE messages SET status = ?, stats = NULL, error = NULL WHERE id = ?", (Status.STREAMING, message_id))

    def finish_message(self, message_id: int, content: str, status: str, stats: dict | None = None,
                       error: str | None = None, inspection: list | None = None) -> None:
        if status not in FINAL_STATUSES:
            raise ValueError(f"status must be one of {', '.join(FINAL_STATUSES)}, not {status!r}")
        with self._lock:
            self._db.execute(
                "UPDATE messages SET content = ?, status = ?, stats = ?, error = ?, inspection = ? WHERE id = ?",
                (content, status, json.dumps(stats) if stats else None, error,
                 json.dumps(inspection) if inspection else None, message_id),
            )

    def messages(self, conversation_id: int) -> list[StoredMessage]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM messages WHERE conversation_id = ? ORDER BY id", (conversation_id,)).fetchall()
        return [self._message(row) for row in rows]

    def message(self, message_id: int) -> StoredMessage | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM messages WHERE id = ?", (message_id,)).fetchone()
        return self._message(row) if row else None

    def delete_messages_from(self, conversation_id: int, message_id: int) -> None:
        """Delete a message and every later one (edit, regenerate)."""
        with self._lock:
            self._db.execute("DELETE FROM messages WHERE conversation_id = ? AND id >= ?", (conversation_id, message_id))

    def user_prompts(self, limit: int = 200) -> list[str]:
        """Earlier prompts, oldest first, for Up-arrow recall."""
        with self._lock:
            rows = self._db.execute("SELECT content FROM messages WHERE role = 'user' ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [row[0] for row in reversed(rows)]

    # --- rows to objects ---

    @staticmethod
    def _conversation(row: sqlite3.Row) -> StoredConversation:
        return StoredConversation(row["id"], row["title"], row["created_at"], row["updated_at"], json.loads(row["settings"] or "{}"))

    @staticmethod
    def _message(row: sqlite3.Row) -> StoredMessage:
        return StoredMessage(
            row["id"], row["conversation_id"], row["role"], row["content"], row["status"],
            json.loads(row["stats"]) if row["stats"] else None, row["error"],
            json.loads(row["inspection"]) if row["inspection"] else None, row["created_at"],
        )
