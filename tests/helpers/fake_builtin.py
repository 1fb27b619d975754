"""A stand-in for chatapp/builtin: model folders (a config.json each) and GGUF files (the magic only)."""

from __future__ import annotations

import json
from pathlib import Path


def fake_builtin(folder: Path, names: list[str]) -> None:
    folder.mkdir()
    for name in names:
        if name.endswith(".gguf"):
            (folder / name).write_bytes(b"GGUF")
        else:
            (folder / name).mkdir()
            (folder / name / "config.json").write_text(json.dumps({"name": name}))
