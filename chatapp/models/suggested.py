"""The small instruct models that the TUI's "Download a model…" suggests (suggested_models.toml)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# Suggested models (the TUI's "Download a model…")

SUGGESTED_FILE = Path(__file__).with_name("suggested_models.toml")


@dataclass(frozen=True)
class SuggestedModel:
    name: str
    repo: str
    quant: str
    size_bytes: int
    memory_bytes: int  # about what it needs to run

    @property
    def spec(self) -> str:
        return f"{self.repo}:{self.quant}"


def suggested_models(path: Path = SUGGESTED_FILE) -> list[SuggestedModel]:
    """The small instruct models of suggested_models.toml, in its order."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    with open(path, "rb") as f:
        entries = tomllib.load(f).get("model", [])
    return [
        SuggestedModel(
            str(e["name"]),
            str(e["repo"]),
            str(e["quant"]),
            int(float(e["size_mb"]) * 1e6),
            int(float(e["memory_gb"]) * 1e9),
        )
        for e in entries
    ]


def machine_memory() -> int | None:
    """This machine's RAM in bytes (os.sysconf); None where it cannot tell."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None
