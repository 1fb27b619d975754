"""The small record of what `chatapp pull` fetched: DATA_DIR/pulled.json, one entry per model.

The files themselves live in the Hugging Face cache (chatapp.models.pull puts them there), where
every tool that reads the cache sees them; this record only lets `chatapp models` mark them, lets
`chatapp run -m REPO:QUANT` find them by the name they were pulled with, and lets `chatapp rm`
forget them. An entry whose file is gone (removed by `hf cache delete`, say) is ignored.
No huggingface_hub here: `chatapp models` reads this on every listing.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from chatapp.paths import data_dir

RECORD_NAME = "pulled.json"


@dataclass(frozen=True)
class PulledModel:
    spec: str  # what it was pulled as, and what finds it again: REPO:QUANT (or REPO:FILE)
    repo: str
    revision: str
    commit: str
    quant: str | None
    name: str  # its name in `chatapp models`: REPO/FILE
    path: str  # the first (or only) file, in the cache's snapshot folder
    files: list[str] = field(default_factory=list)  # every part, in the cache's snapshot folder
    size_bytes: int = 0
    pulled_at: float = 0.0

    def exists(self) -> bool:
        return Path(self.path).is_file()


def record_path() -> Path:
    return data_dir() / RECORD_NAME


def read_record() -> list[PulledModel]:
    """Every entry, those whose files are gone included; an unreadable record reads as empty."""
    try:
        entries = json.loads(record_path().read_text(encoding="utf-8"))
        known = {f for f in PulledModel.__dataclass_fields__}
        return [PulledModel(**{k: v for k, v in e.items() if k in known}) for e in entries if isinstance(e, dict)]
    except (OSError, ValueError, TypeError):
        return []


def write_record(entries: list[PulledModel]) -> None:
    path = record_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{RECORD_NAME}.{os.getpid()}")
    temporary.write_text(json.dumps([asdict(e) for e in entries], indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, path)


def pulled_models() -> list[PulledModel]:
    """The entries whose files are still there."""
    return [e for e in read_record() if e.exists()]


def pulled_paths() -> set[Path]:
    return {Path(e.path) for e in pulled_models()}


def remember(entry: PulledModel) -> None:
    """Add an entry, replacing one for the same file; entries whose files are gone are dropped."""
    kept = [e for e in read_record() if e.path != entry.path and e.exists()]
    write_record(kept + [entry])


def forget(path: Path) -> None:
    kept = [e for e in read_record() if Path(e.path) != path and e.exists()]
    write_record(kept)


def find_pulled(spec: str) -> PulledModel | None:
    """A pulled model by what it was pulled as (REPO:QUANT, case-insensitive), its name, its path, or its repo
    alone when only one model was pulled from it."""
    models = pulled_models()
    for e in models:
        if spec.lower() == e.spec.lower() or spec == e.name or spec == e.path:
            return e
    from_repo = [e for e in models if e.repo.lower() == spec.lower()]
    return from_repo[0] if len(from_repo) == 1 else None
