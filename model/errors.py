"""One line for the user from any exception: its first line, else its type's name. Torch-free."""

from __future__ import annotations


def one_line(error: BaseException, limit: int | None = None) -> str:
    lines = str(error).strip().splitlines()
    return (lines[0] if lines else type(error).__name__)[:limit]
