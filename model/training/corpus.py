"""The built-in Shakespeare corpus and its fixed train/validation split.

The 42 works ship inside the package as one xz-compressed tar file (with the
provenance file SOURCE.md). The split never changes, so numbers compare across
runs and releases: validation is the last 5% of each work's characters, the
cut moved back to the start of its line; training is the rest.
"""

from __future__ import annotations

import tarfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from model import DATA_DIR

CORPUS_ARCHIVE = DATA_DIR / "shakespeare.tar.xz"
VALIDATION_FRACTION = 0.05


@dataclass(frozen=True)
class Work:
    name: str
    text: str


@dataclass(frozen=True)
class Split:
    train: list[Work]
    validation: list[Work]


@lru_cache(maxsize=1)
def builtin_works() -> tuple[Work, ...]:
    """All works of the built-in corpus, sorted by file name."""
    works = []
    with tarfile.open(CORPUS_ARCHIVE, "r:xz") as archive:
        for member in sorted(archive.getmembers(), key=lambda m: m.name):
            if member.isfile() and member.name.endswith(".txt"):
                works.append(Work(Path(member.name).stem, _file_bytes(archive, member).decode("utf-8")))
    return tuple(works)


def builtin_source_note() -> str:
    with tarfile.open(CORPUS_ARCHIVE, "r:xz") as archive:
        return _file_bytes(archive, "shakespeare/SOURCE.md").decode("utf-8")


def _file_bytes(archive: tarfile.TarFile, member: str | tarfile.TarInfo) -> bytes:
    """A regular file of the archive (extractfile gives None for anything else)."""
    file = archive.extractfile(member)
    assert file is not None, f"{CORPUS_ARCHIVE}: {member} is not a file"
    return file.read()


def read_works(path: str | Path) -> tuple[Work, ...]:
    """Works from a user's text file or a folder of .txt files."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.txt"))
        if not files:
            raise ValueError(f"{path}: no .txt files in this folder")
    elif path.is_file():
        files = [path]
    else:
        raise ValueError(f"{path}: no such file or folder")
    return tuple(Work(f.stem, f.read_text(encoding="utf-8", errors="replace")) for f in files)


def validation_cut(text: str, fraction: float = VALIDATION_FRACTION) -> int:
    """Index where the validation part of one work starts (at a line start)."""
    cut = int(len(text) * (1 - fraction))
    line_start = text.rfind("\n", 0, cut)
    return line_start + 1 if line_start >= 0 else 0


def split_works(works: tuple[Work, ...] | list[Work]) -> Split:
    train, validation = [], []
    for work in works:
        cut = validation_cut(work.text)
        train.append(Work(work.name, work.text[:cut]))
        validation.append(Work(work.name, work.text[cut:]))
    return Split(train, validation)


def builtin_split() -> Split:
    return split_works(builtin_works())
