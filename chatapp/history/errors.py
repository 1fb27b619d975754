"""What can go wrong with the history file, in words the user can act on.

HistoryStore raises these: HistoryUnavailable when the file cannot be used at
all (it is checked at open, cheaply: the 100-byte header for a foreign or
truncated file, then the schema page), HistoryFull and HistoryWriteError when
a write fails. move_aside() puts a damaged file out of the way, keeping it.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path


class HistoryError(Exception):
    """The history cannot be read or written; `reason` says what and what to do, in one line."""

    def __init__(self, reason: str, path: Path | str | None = None, can_move_aside: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.path = Path(path) if path is not None else None
        self.can_move_aside = can_move_aside


class HistoryUnavailable(HistoryError):
    """The file cannot be used at all: damaged, not a history, from a newer chatapp, or not writable."""


class SchemaTooNew(HistoryUnavailable):
    pass


class HistoryFull(HistoryError):
    """A write found the disk (or the database's size limit) full."""


class HistoryWriteError(HistoryError):
    """Any other failed write."""


def move_aside(path: Path | str) -> Path:
    """Rename a history file (and its -wal and -shm) out of the way, next to it; nothing is deleted."""
    path = Path(path)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    number = 1
    while aside.exists():
        number += 1
        aside = path.with_name(f"{path.name}.corrupt-{stamp}-{number}")
    for suffix in ("-wal", "-shm"):  # first, so a crash in between never leaves them beside a new file
        companion = Path(f"{path}{suffix}")
        if companion.exists():
            companion.rename(f"{aside}{suffix}")
    path.rename(aside)
    return aside


def header_damage(path: Path) -> str | None:
    """What is wrong with the file's 100-byte SQLite header, if anything (cheap: no page is read)."""
    size = path.stat().st_size
    with open(path, "rb") as file:
        header = file.read(100)
    if not header.startswith(b"SQLite format 3\x00"):
        return "not an SQLite database"
    if len(header) < 100:
        return "truncated"
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    page_count = int.from_bytes(header[28:32], "big")
    count_is_valid = page_count > 0 and header[24:28] == header[92:96]
    wal = Path(f"{path}-wal")
    wal_holds_pages = wal.exists() and wal.stat().st_size > 0  # a checkpoint cut short: the WAL completes the file
    if count_is_valid and not wal_holds_pages and size < page_count * page_size:
        return f"truncated: {size} of {page_count * page_size} bytes"
    return None


# SQLite's primary result codes (sqlite3 names them only from Python 3.11 on)
SQLITE_BUSY, SQLITE_LOCKED, SQLITE_CORRUPT, SQLITE_FULL, SQLITE_NOTADB = 5, 6, 11, 13, 26
DAMAGED_CODES = (SQLITE_CORRUPT, SQLITE_NOTADB)


def primary_code(error: sqlite3.Error) -> int | None:
    code = getattr(error, "sqlite_errorcode", None)  # Python 3.11+; the message is checked as well
    return code & 0xFF if code is not None else None


def is_full(error: sqlite3.Error) -> bool:
    return primary_code(error) == SQLITE_FULL or "database or disk is full" in str(error)


def is_damage(error: sqlite3.Error) -> bool:
    text = str(error)
    return primary_code(error) in DAMAGED_CODES or "malformed" in text or "not a database" in text


def collapse_whitespace(text: object) -> str:
    """Any text (or an exception) on one line, its whitespace runs made single spaces."""
    return " ".join(str(text).split())


def damaged(path: Path, detail: str) -> HistoryUnavailable:
    return HistoryUnavailable(
        f"{path} is damaged ({collapse_whitespace(detail)}): move it aside to start a new history",
        path,
        can_move_aside=True,
    )


def not_writable(path: Path, detail: str) -> HistoryUnavailable:
    return HistoryUnavailable(
        f"{path} cannot be opened for writing ({collapse_whitespace(detail)}): "
        f"check the permissions of the file and of {path.parent}",
        path,
        can_move_aside=False,
    )
