"""Conversations in one SQLite file: WAL, a schema version with migrations, mode 0600.

Every message is written when it is sent. A streaming reply is a row with
status "streaming" that the generator updates as it grows and finishes with
"complete", "stopped" (Esc), "length" or "error". The row records its writer
(pid, host, heartbeat); a row still "streaming" when a store opens whose
writer is gone (kill -9) becomes "interrupted", with every character saved so
far, while a row another running instance is writing is left alone.

A conversation is a tree (schema 5): each message has a parent (the message
before it; none for the first) and siblings are its branches: an edit or a
regeneration adds a sibling, the old branch stays. Siblings share a `slot` (the
id of the first of them), which grows along every branch, so a branch reads in
slot order. `chosen` marks the sibling a branch goes on with (remembered while
another branch is shown), `shown` every message of the branch on screen: the
path from the first message through chosen ones to the end, which pages,
counts and the model read with one index (the tree's mechanics: branches.py). Sampling-inspector
data sits in its own table, packed (chatapp/history/inspection.py), read only
when asked for, and kept for the most recent INSPECTION_KEPT replies only.
Full-text search is in chatapp/history/search.py.

A file that cannot be used raises HistoryUnavailable at open; a write that
fails raises HistoryFull or HistoryWriteError: each says in one line what
happened and what to do.

One connection, shared by the UI and the generation thread behind a lock.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from chatapp.history import inspection as packed_inspection
from chatapp.history.branches import copy_branch, show_path_through
from chatapp.history.errors import (
    SQLITE_BUSY,
    SQLITE_LOCKED,
    HistoryError,
    HistoryFull,
    HistoryUnavailable,
    HistoryWriteError,
    SchemaTooNew,
    collapse_whitespace,
    damaged,
    header_damage,
    is_damage,
    is_full,
    move_aside,
    not_writable,
    primary_code,
)
from chatapp.history.search import (
    BRANCH_SEARCH_TRIGGERS,
    SEARCH_SCHEMA,
    SearchHit,
    conversation_ids_sql,
    fts_query,
    search_sql,
    snippet_around,
)
from chatapp.paths import data_dir

HISTORY_FILE = "history.sqlite3"
MEMORY = ":memory:"
DEFAULT_TITLE = "New conversation"
TITLE_LENGTH = 48
INSPECTION_KEPT = 100  # replies that keep their sampling-inspector data, newest first
STALE_AFTER_S = 60.0  # a streaming row not heartbeated for this long has lost its writer
OPEN_CONVERSATION_KEY = "open_conversation"
NEW_FILE_PAGE_SIZE = 8192  # messages of a few KB waste less of a page than with SQLite's 4096

__all__ = [  # the public names, with those re-exported from history_errors and history_search
    "HistoryStore",
    "HistoryError",
    "HistoryUnavailable",
    "HistoryFull",
    "HistoryWriteError",
    "SchemaTooNew",
    "Status",
    "StoredMessage",
    "StoredConversation",
    "SearchHit",
    "move_aside",
    "history_path",
    "title_from",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "FINAL_STATUSES",
    "CONTINUABLE",
    "NOT_SENT_TO_MODEL",
    "DEFAULT_TITLE",
    "INSPECTION_KEPT",
    "STALE_AFTER_S",
]

V3_SCHEMA = """
ALTER TABLE messages ADD COLUMN model TEXT;
ALTER TABLE messages ADD COLUMN slot INTEGER;
ALTER TABLE messages ADD COLUMN shown INTEGER NOT NULL DEFAULT 1;
ALTER TABLE messages ADD COLUMN owner_pid INTEGER;
ALTER TABLE messages ADD COLUMN owner_host TEXT;
ALTER TABLE messages ADD COLUMN heartbeat_at REAL;
UPDATE messages SET slot = id;
DROP INDEX messages_by_conversation;
CREATE INDEX messages_in_order ON messages (conversation_id, shown, slot);
CREATE INDEX messages_versions ON messages (slot, id);
CREATE INDEX messages_streaming ON messages (status) WHERE status = 'streaming';
CREATE TABLE inspections (
    seq INTEGER PRIMARY KEY,
    message_id INTEGER NOT NULL UNIQUE REFERENCES messages(id) ON DELETE CASCADE,
    data BLOB NOT NULL
);
CREATE TABLE app_state (key TEXT PRIMARY KEY, value TEXT) WITHOUT ROWID;
"""


def _migrate_to_v3(db: sqlite3.Connection) -> None:
    """Versions, writers, packed inspection data, full-text search. The old JSON
    inspection column stays (SQLite cannot drop it everywhere) but is emptied:
    the newest INSPECTION_KEPT replies' data moves to the packed table."""
    for statement in _statements(V3_SCHEMA + SEARCH_SCHEMA):
        db.execute(statement)
    rows = db.execute(
        "SELECT id, inspection FROM messages WHERE inspection IS NOT NULL ORDER BY id DESC LIMIT ?", (INSPECTION_KEPT,)
    ).fetchall()
    for message_id, text in reversed(rows):
        try:
            steps = json.loads(text)
        except ValueError:
            continue  # unreadable old data is dropped, the message is kept
        if steps:
            db.execute(
                "INSERT INTO inspections (message_id, data) VALUES (?, ?)",
                (message_id, packed_inspection.encode(steps)),
            )
    db.execute("UPDATE messages SET inspection = NULL WHERE inspection IS NOT NULL")


V5_SCHEMA = """
ALTER TABLE messages ADD COLUMN parent_id INTEGER;
ALTER TABLE messages ADD COLUMN chosen INTEGER NOT NULL DEFAULT 1;
"""  # no index on parent_id: a branch is followed down from one read of its conversation (show_path_through)


def _migrate_to_v5(db: sqlite3.Connection) -> None:
    """Reply versions become branches of a tree. A v4 conversation is a line of slots, each holding one
    message or the versions of a reply, one of them shown: every message's parent is the shown one of the
    slot before (the versions not shown become branches of one reply), and what was shown stays shown.
    Every branch is indexed for search."""
    for statement in _statements(V5_SCHEMA + BRANCH_SEARCH_TRIGGERS):
        db.execute(statement)
    rows = db.execute("SELECT id, conversation_id, slot, shown FROM messages ORDER BY conversation_id, slot, id")
    slots: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for message_id, conversation_id, slot, shown in rows:
        slots.setdefault((conversation_id, slot), []).append((message_id, shown))
    changes: list[tuple[int | None, int, int, int]] = []  # (parent_id, chosen, shown, id)
    parent: int | None = None
    conversation = None
    for (conversation_id, _), members in slots.items():  # in conversation and slot order
        if conversation_id != conversation:
            parent, conversation = None, conversation_id
        chosen = next((message_id for message_id, shown in members if shown), members[-1][0])
        for message_id, shown in members:
            on_path = int(message_id == chosen)
            if parent is not None or not (on_path and shown):  # new columns' defaults: chosen 1, parent none
                changes.append((parent, on_path, on_path, message_id))
        parent = chosen
    db.executemany("UPDATE messages SET parent_id = ?, chosen = ?, shown = ? WHERE id = ?", changes)


# Each entry moves the schema one version up: SQL, or a function of the connection
# for what SQL cannot do. Never edit one that has shipped.
Migration = str | Callable[[sqlite3.Connection], None]  # SQL, or Python for what SQL cannot do

MIGRATIONS: list[Migration] = [
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
    _migrate_to_v3,
    """
    ALTER TABLE messages ADD COLUMN reasoning TEXT NOT NULL DEFAULT '';
    """,  # v4: a reasoning model's thinking, kept apart from its answer (content)
    _migrate_to_v5,  # v5: conversations as trees (branches), every branch searchable
]
SCHEMA_VERSION = len(MIGRATIONS)


class Status:
    """A message's status: one name for each, used by the store and the app alike."""

    STREAMING = "streaming"  # a reply being generated (saved as it grows)
    COMPLETE = "complete"
    STOPPED = "stopped"  # the user pressed Esc
    LENGTH = "length"  # the token budget ran out
    ERROR = "error"
    INTERRUPTED = "interrupted"  # its writer died while it streamed


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
    inspection: list | None = None  # only message() fills it; see HistoryStore.inspection()
    created_at: float = 0.0
    model: str | None = None  # the model that wrote a reply
    branch: int = 1  # 1-based position among its siblings (the branches at this point of the conversation)
    branch_count: int = 1
    reasoning: str = ""  # a reply's thinking (a reasoning model's), apart from its answer in content
    parent_id: int | None = None  # the message before it in its branch; None for the first
    shown: bool = True  # on the branch the conversation shows


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


def _statements(script: str) -> list[str]:
    """A script split into statements (executescript would commit the migration's transaction)."""
    statements, pending = [], ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                statements.append(pending.strip())
            pending = ""
    return statements


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, someone else's
    return True


class HistoryStore:
    def __init__(self, path: Path | str | None = None):
        self._lock = threading.RLock()
        self.recovered = 0
        self._host = socket.gethostname()
        if str(path) == MEMORY:
            self.path = Path(MEMORY)
            self._db = self._connect(MEMORY)
        else:
            self.path = Path(path) if path else history_path()
            self._db = self._open_file()
        try:
            self._migrate()
            self.recovered = self._recover_orphaned_replies()
        except HistoryError:
            self._db.close()
            raise
        except sqlite3.Error as error:
            self._db.close()
            raise self._open_error(error) from error

    @classmethod
    def in_memory(cls) -> HistoryStore:
        """A history that lives as long as the app: for "continue without saving"."""
        return cls(MEMORY)

    # --- set-up ---

    @staticmethod
    def _connect(target: str | Path) -> sqlite3.Connection:
        db = sqlite3.connect(target, check_same_thread=False, isolation_level=None, timeout=5.0)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA foreign_keys=ON")
        return db

    def _open_file(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise not_writable(self.path, error.strerror or str(error)) from error
        if self.path.is_file() and self.path.stat().st_size > 0:
            damage = header_damage(self.path)
            if damage:
                raise damaged(self.path, damage)
        try:
            os.close(os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600))
            os.chmod(self.path, 0o600)
        except OSError as error:
            raise not_writable(self.path, error.strerror or str(error)) from error
        db = self._connect(self.path)
        try:
            db.execute(f"PRAGMA page_size = {NEW_FILE_PAGE_SIZE}")  # a new file only; before WAL fixes it
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()  # reads the schema page: damage there shows now
        except sqlite3.Error as error:
            db.close()
            raise self._open_error(error) from error
        return db

    def _open_error(self, error: sqlite3.Error) -> HistoryUnavailable:
        if is_damage(error):
            return damaged(self.path, str(error))
        if is_full(error):
            return HistoryUnavailable(
                f"the disk is full ({self.path.parent}): free some space and start again",
                self.path,
                can_move_aside=False,
            )
        if primary_code(error) in (SQLITE_BUSY, SQLITE_LOCKED):
            return HistoryUnavailable(
                f"{self.path} is locked by another program ({collapse_whitespace(error)}): close it and start again",
                self.path,
                can_move_aside=False,
            )
        return not_writable(self.path, str(error))

    @property
    def schema_version(self) -> int:
        with self._lock:
            return self._db.execute("PRAGMA user_version").fetchone()[0]

    def _migrate(self) -> None:
        with self._lock:
            version = self.schema_version
            if version > SCHEMA_VERSION:
                raise SchemaTooNew(
                    f"{self.path} was written by a newer chatapp (schema {version} > {SCHEMA_VERSION}): "
                    "update chatapp, or move it aside to start a new history",
                    self.path,
                    can_move_aside=True,
                )
            if version == SCHEMA_VERSION:
                return
            migrated_inspection = version < 3
            while self._migrate_one_step():
                pass
            if migrated_inspection and self.path != Path(MEMORY):
                self._reclaim_space()

    def _migrate_one_step(self) -> bool:
        """Apply the next migration in its own transaction; False once the schema is current.
        The version is read inside the transaction: another instance may have migrated meanwhile."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            version = self.schema_version
            if version >= SCHEMA_VERSION:
                self._db.execute("COMMIT")
                return False
            step = MIGRATIONS[version]
            if not isinstance(step, str):
                step(self._db)
            else:
                for statement in _statements(step):
                    self._db.execute(statement)
            self._db.execute(f"PRAGMA user_version = {version + 1}")
            self._db.execute("COMMIT")
            return True
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def _reclaim_space(self) -> None:
        """After the JSON inspection data is gone: give its pages back to the disk, when it was a lot."""
        free = self._db.execute("PRAGMA freelist_count").fetchone()[0]
        total = self._db.execute("PRAGMA page_count").fetchone()[0]
        if free > 256 and free * 4 > total:
            try:
                self._db.execute("VACUUM")
            except sqlite3.Error:
                pass  # it needs room for a copy; the free pages are reused as the history grows

    def _writer_alive(self, row: sqlite3.Row, now: float) -> bool:
        if row["heartbeat_at"] is None or now - row["heartbeat_at"] > STALE_AFTER_S:
            return False
        if row["owner_host"] == self._host:
            return row["owner_pid"] is not None and _pid_alive(row["owner_pid"])
        return True  # another machine's writer, heartbeating

    def _recover_orphaned_replies(self) -> int:
        """Streaming rows whose writer is gone become interrupted; another running instance's are left alone."""
        now = time.time()
        with self._reading() as db:
            rows = db.execute(
                "SELECT id, owner_pid, owner_host, heartbeat_at FROM messages WHERE status = 'streaming'"
            ).fetchall()
        orphans = [(row["id"],) for row in rows if not self._writer_alive(row, now)]
        if not orphans:
            return 0
        try:
            with self._writing() as db:
                db.executemany(
                    "UPDATE messages SET status = ? WHERE id = ? AND status = ?",
                    [(Status.INTERRUPTED, message_id, Status.STREAMING) for (message_id,) in orphans],
                )
        except (HistoryFull, HistoryWriteError):
            return 0  # the rows stay streaming until a start that can write
        return len(orphans)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- reading and writing, with sqlite errors as HistoryErrors ---

    @contextmanager
    def _writing(self):
        """One transaction; any sqlite error becomes HistoryFull or HistoryWriteError
        (or HistoryUnavailable for damage)."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                except BaseException:
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as error:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise self._write_error(error) from error

    @contextmanager
    def _reading(self):
        with self._lock:
            try:
                yield self._db
            except sqlite3.Error as error:
                if is_damage(error):
                    raise damaged(self.path, str(error)) from error
                raise HistoryError(f"reading {self.path} failed ({collapse_whitespace(error)})", self.path) from error

    def _write_error(self, error: sqlite3.Error) -> HistoryError:
        if is_full(error):
            return HistoryFull(
                f"the disk is full ({self.path.parent}): free some space and it is saved again", self.path
            )
        if is_damage(error):
            return damaged(self.path, str(error))
        return HistoryWriteError(f"saving to {self.path} failed ({collapse_whitespace(error)})", self.path)

    # --- conversations ---

    def create_conversation(self, settings: dict | None = None, title: str = DEFAULT_TITLE) -> StoredConversation:
        now = time.time()
        with self._writing() as db:
            cursor = db.execute(
                "INSERT INTO conversations (title, created_at, updated_at, settings) VALUES (?, ?, ?, ?)",
                (title, now, now, json.dumps(settings or {})),
            )
        return StoredConversation(cursor.lastrowid, title, now, now, dict(settings or {}))

    def conversations(self, text_filter: str = "") -> list[StoredConversation]:
        """Newest first; a filter keeps those whose title, or one of whose messages, has every word
        (as a word prefix, in any case)."""
        text = text_filter.strip()
        with self._reading() as db:
            if not text:
                rows = db.execute("SELECT * FROM conversations ORDER BY updated_at DESC, id DESC").fetchall()
            else:
                rows = self._with_like_fallback(text, lambda query: self._conversations_matching(query, text))
        return [self._conversation(row) for row in rows]

    def _conversations_matching(self, query: str | None, text: str) -> list[sqlite3.Row]:
        ids_sql, args = conversation_ids_sql(query, text)
        return self._db.execute(
            f"SELECT * FROM conversations WHERE id IN ({ids_sql}) ORDER BY updated_at DESC, id DESC", args
        ).fetchall()

    @staticmethod
    def _with_like_fallback(text: str, run):
        """run(fts query) and, where FTS5 cannot take the filter, run(None): LIKE."""
        query = fts_query(text)
        if query is None:
            return run(None)
        try:
            return run(query)
        except sqlite3.OperationalError as error:
            if "fts5" not in str(error):
                raise
            return run(None)

    def search(self, query: str, limit: int = 50) -> list[SearchHit]:
        """Conversations whose title matches (message_id None, the title as snippet), then messages
        newest first, each with a one-line snippet around the match; at most `limit` in all."""
        text = query.strip()
        if not text:
            return []

        def run(fts: str | None) -> list[SearchHit]:
            found = []
            for sql, args in search_sql(fts, text, limit):
                for conversation_id, title, message_id, snippet in self._db.execute(sql, args):
                    if fts is None and message_id is not None:  # LIKE gives the whole message: cut it around the match
                        snippet = snippet_around(snippet, text)
                    found.append(SearchHit(conversation_id, title, message_id, collapse_whitespace(snippet)))
            return found

        with self._reading():
            return self._with_like_fallback(text, run)[:limit]

    def conversation(self, conversation_id: int) -> StoredConversation | None:
        with self._reading() as db:
            row = db.execute("SELECT * FROM conversations WHERE id = ?", (conversation_id,)).fetchone()
        return self._conversation(row) if row else None

    def rename(self, conversation_id: int, title: str) -> None:
        with self._writing() as db:
            db.execute(
                "UPDATE conversations SET title = ? WHERE id = ?", (title.strip() or DEFAULT_TITLE, conversation_id)
            )

    def delete(self, conversation_id: int) -> None:
        with self._writing() as db:
            db.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))

    def save_settings(self, conversation_id: int, settings: dict) -> None:
        with self._writing() as db:
            db.execute("UPDATE conversations SET settings = ? WHERE id = ?", (json.dumps(settings), conversation_id))

    def remember_open(self, conversation_id: int | None) -> None:
        """The conversation on screen, for the next start."""
        with self._writing() as db:
            db.execute(
                "INSERT OR REPLACE INTO app_state (key, value) VALUES (?, ?)",
                (OPEN_CONVERSATION_KEY, None if conversation_id is None else str(conversation_id)),
            )

    def last_open(self) -> int | None:
        """The conversation remembered by remember_open, if it still exists."""
        with self._reading() as db:
            row = db.execute(
                "SELECT c.id FROM app_state s JOIN conversations c ON c.id = CAST(s.value AS INTEGER) WHERE s.key = ?",
                (OPEN_CONVERSATION_KEY,),
            ).fetchone()
        return row[0] if row else None

    @staticmethod
    def _touch(db: sqlite3.Connection, conversation_id: int) -> None:
        db.execute("UPDATE conversations SET updated_at = ? WHERE id = ?", (time.time(), conversation_id))

    # --- messages ---

    def add_message(
        self,
        conversation_id: int,
        role: str,
        content: str,
        status: str = Status.COMPLETE,
        model: str | None = None,
        sibling_of: int | None = None,
        reasoning: str = "",
    ) -> StoredMessage:
        """A new message at the end of the shown branch, or, with sibling_of, a new branch beside that
        message (an edit, a regenerated reply), which becomes the branch shown."""
        now = time.time()
        streaming = status == Status.STREAMING
        with self._writing() as db:
            if sibling_of is None:
                last = db.execute(
                    "SELECT id FROM messages WHERE conversation_id = ? AND shown = 1 ORDER BY slot DESC LIMIT 1",
                    (conversation_id,),
                ).fetchone()
                parent, slot = (last[0] if last else None), None
            else:
                parent, slot = self._sibling_place(db, conversation_id, sibling_of)
            cursor = db.execute(
                "INSERT INTO messages (conversation_id, role, content, status, created_at, model, slot, shown, "
                "owner_pid, owner_host, heartbeat_at, reasoning, parent_id, chosen) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?, ?)",
                (
                    conversation_id,
                    role,
                    content,
                    status,
                    now,
                    model,
                    slot,
                    os.getpid() if streaming else None,
                    self._host if streaming else None,
                    now if streaming else None,
                    reasoning,
                    parent,
                    int(sibling_of is None),  # a new branch is made the chosen one by show_path_through
                ),
            )
            message_id = cursor.lastrowid
            assert message_id is not None
            if slot is None:
                slot = message_id
                db.execute("UPDATE messages SET slot = id WHERE id = ?", (message_id,))
            else:
                show_path_through(db, conversation_id, message_id)
            count = db.execute("SELECT COUNT(*) FROM messages WHERE slot = ?", (slot,)).fetchone()[0]
            self._touch(db, conversation_id)
            if role == "user":
                db.execute(
                    "UPDATE conversations SET title = ? WHERE id = ? AND title = ?",
                    (title_from(content), conversation_id, DEFAULT_TITLE),
                )
        return StoredMessage(
            message_id,
            conversation_id,
            role,
            content,
            status,
            created_at=now,
            model=model,
            branch=count,
            branch_count=count,
            reasoning=reasoning,
            parent_id=parent,
        )

    @staticmethod
    def _sibling_place(db: sqlite3.Connection, conversation_id: int, message_id: int) -> tuple[int | None, int]:
        """Where a new sibling of the message goes: its parent and its slot."""
        row = db.execute("SELECT parent_id, slot, conversation_id FROM messages WHERE id = ?", (message_id,)).fetchone()
        if row is None or row["conversation_id"] != conversation_id:
            raise ValueError(f"message {message_id} is not in conversation {conversation_id}")
        return row["parent_id"], row["slot"]

    def update_content(self, message_id: int, content: str, reasoning: str | None = None) -> None:
        """A streaming reply so far, its thinking too when given (it also tells other instances its
        writer is alive)."""
        with self._writing() as db:
            if reasoning is None:
                db.execute(
                    "UPDATE messages SET content = ?, heartbeat_at = ? WHERE id = ?", (content, time.time(), message_id)
                )
            else:
                db.execute(
                    "UPDATE messages SET content = ?, reasoning = ?, heartbeat_at = ? WHERE id = ?",
                    (content, reasoning, time.time(), message_id),
                )

    def heartbeat(self, message_id: int) -> None:
        """The streaming reply's writer is alive (while the engine thinks before its first token)."""
        with self._writing() as db:
            db.execute(
                "UPDATE messages SET heartbeat_at = ? WHERE id = ? AND status = ?",
                (time.time(), message_id, Status.STREAMING),
            )

    def reopen_message(self, message_id: int) -> None:
        """A reply that streams again (continue), written by this process."""
        with self._writing() as db:
            db.execute(
                "UPDATE messages SET status = ?, stats = NULL, error = NULL, owner_pid = ?, owner_host = ?, "
                "heartbeat_at = ? WHERE id = ?",
                (Status.STREAMING, os.getpid(), self._host, time.time(), message_id),
            )

    def finish_message(
        self,
        message_id: int,
        content: str,
        status: str,
        stats: dict | None = None,
        error: str | None = None,
        inspection: list | None = None,
        reasoning: str | None = None,
    ) -> None:
        """The reply's end: its answer, its thinking when given (else the thinking saved so far stays)."""
        if status not in FINAL_STATUSES:
            raise ValueError(f"status must be one of {', '.join(FINAL_STATUSES)}, not {status!r}")
        packed = packed_inspection.encode(inspection) if inspection else None
        with self._writing() as db:
            finished = db.execute(
                "UPDATE messages SET content = ?, status = ?, stats = ?, error = ?, owner_pid = NULL, "
                "owner_host = NULL, heartbeat_at = NULL, reasoning = COALESCE(?, reasoning) WHERE id = ?",
                (content, status, json.dumps(stats) if stats else None, error, reasoning, message_id),
            ).rowcount
            if not finished:
                return  # deleted while it streamed: nothing to save
            if packed is None:
                db.execute("DELETE FROM inspections WHERE message_id = ?", (message_id,))
            else:
                db.execute("INSERT OR REPLACE INTO inspections (message_id, data) VALUES (?, ?)", (message_id, packed))
                db.execute(
                    "DELETE FROM inspections WHERE seq <= "
                    "(SELECT seq FROM inspections ORDER BY seq DESC LIMIT 1 OFFSET ?)",
                    (INSPECTION_KEPT,),
                )

    def inspection(self, message_id: int) -> list[dict] | None:
        """The reply's sampling-inspector steps, or None (none recorded, or pruned as old)."""
        with self._reading() as db:
            row = db.execute("SELECT data FROM inspections WHERE message_id = ?", (message_id,)).fetchone()
        return packed_inspection.decode(row[0]) if row else None

    def messages(
        self, conversation_id: int, before: int | None = None, limit: int | None = None, since: int | None = None
    ) -> list[StoredMessage]:
        """The shown branch's messages, oldest first: with limit, the last `limit` of them (before message
        `before`); with since, those from message `since` on (with limit, the first `limit` of them)."""
        where = "m.conversation_id = ? AND m.shown = 1"
        args: list = [conversation_id]
        if before is not None:
            where += " AND m.slot < (SELECT slot FROM messages WHERE id = ?)"
            args.append(before)
        if since is not None:
            where += " AND m.slot >= (SELECT slot FROM messages WHERE id = ?)"
            args.append(since)
        newest_first = limit is not None and since is None
        order = "ORDER BY m.slot DESC" if newest_first else "ORDER BY m.slot"
        if limit is not None:
            order += " LIMIT ?"
            args.append(limit)
        with self._reading() as db:
            rows = db.execute(f"SELECT {MESSAGE_COLUMNS} FROM messages m WHERE {where} {order}", args).fetchall()
        if newest_first:
            rows.reverse()
        return [self._message(row) for row in rows]

    def every_branch(self, conversation_id: int) -> list[StoredMessage]:
        """Every message of every branch (the whole tree), oldest first; `shown` marks the shown branch."""
        return self._messages_where("m.conversation_id = ? ORDER BY m.id", (conversation_id,))

    def last_messages(self, conversation_id: int, n: int) -> list[StoredMessage]:
        return self.messages(conversation_id, limit=n)

    def message_count(self, conversation_id: int, before: int | None = None) -> int:
        """The shown branch's messages (before message `before`)."""
        where, args = "conversation_id = ? AND shown = 1", [conversation_id]
        if before is not None:
            where += " AND slot < (SELECT slot FROM messages WHERE id = ?)"
            args.append(before)
        with self._reading() as db:
            return db.execute(f"SELECT COUNT(*) FROM messages WHERE {where}", args).fetchone()[0]

    def message(self, message_id: int) -> StoredMessage | None:
        """One message, with its inspection data (one reply's worth: cheap enough here)."""
        found = self._messages_where("m.id = ?", (message_id,))
        if not found:
            return None
        found[0].inspection = self.inspection(message_id)
        return found[0]

    def branches(self, message_id: int) -> list[StoredMessage]:
        """The message and its siblings (the branches at its place in the conversation), oldest first."""
        return self._messages_where("m.slot = (SELECT slot FROM messages WHERE id = ?) ORDER BY m.id", (message_id,))

    def show_branch(self, message_id: int) -> StoredMessage:
        """Show the branch through this message (any message, in any branch): the conversation reads from
        its first message through this one, then on along the branch last chosen below it."""
        with self._writing() as db:
            row = db.execute("SELECT conversation_id FROM messages WHERE id = ?", (message_id,)).fetchone()
            if row is None:
                raise ValueError(f"there is no message {message_id}")
            show_path_through(db, row[0], message_id)
        return self._messages_where("m.id = ?", (message_id,))[0]

    def fork(self, message_id: int) -> StoredConversation:
        """A new conversation holding a copy of the branch up to this message (its inspection data too);
        the original is not changed."""
        with self._writing() as db:
            row = db.execute(
                "SELECT c.title, c.settings FROM messages m JOIN conversations c ON c.id = m.conversation_id "
                "WHERE m.id = ?",
                (message_id,),
            ).fetchone()
            if row is None:
                raise ValueError(f"there is no message {message_id}")
            now = time.time()
            title = f"{row['title']} (fork)"
            forked = db.execute(
                "INSERT INTO conversations (title, created_at, updated_at, settings) VALUES (?, ?, ?, ?)",
                (title, now, now, row["settings"]),
            ).lastrowid
            assert forked is not None
            copy_branch(db, message_id, forked)
        return StoredConversation(forked, title, now, now, json.loads(row["settings"] or "{}"))

    def user_prompts(self, limit: int = 200) -> list[str]:
        """Earlier prompts, oldest first, for Up-arrow recall."""
        with self._reading() as db:
            rows = db.execute(
                "SELECT content FROM messages WHERE role = 'user' ORDER BY id DESC LIMIT ?", (limit,)
            ).fetchall()
        return [row[0] for row in reversed(rows)]

    # --- rows to objects ---

    def _messages_where(self, condition: str, args: tuple) -> list[StoredMessage]:
        with self._reading() as db:
            rows = db.execute(f"SELECT {MESSAGE_COLUMNS} FROM messages m WHERE {condition}", args).fetchall()
        return [self._message(row) for row in rows]

    @staticmethod
    def _conversation(row: sqlite3.Row) -> StoredConversation:
        return StoredConversation(
            row["id"], row["title"], row["created_at"], row["updated_at"], json.loads(row["settings"] or "{}")
        )

    @staticmethod
    def _message(row: sqlite3.Row) -> StoredMessage:
        return StoredMessage(
            row["id"],
            row["conversation_id"],
            row["role"],
            row["content"],
            row["status"],
            json.loads(row["stats"]) if row["stats"] else None,
            row["error"],
            None,
            row["created_at"],
            row["model"],
            row["branch"],
            row["branch_count"],
            row["reasoning"],
            row["parent_id"],
            bool(row["shown"]),
        )


MESSAGE_COLUMNS = (
    "m.id, m.conversation_id, m.role, m.content, m.status, m.stats, m.error, m.created_at, m.model, m.reasoning, "
    "m.parent_id, m.shown, "
    "(SELECT COUNT(*) FROM messages v WHERE v.slot = m.slot AND v.id <= m.id) AS branch, "
    "(SELECT COUNT(*) FROM messages v WHERE v.slot = m.slot) AS branch_count"
)
