"""Files that appear whole or not at all: written beside their name, then renamed onto it."""

from __future__ import annotations

import json
import os
from pathlib import Path


def publish_file(temporary: Path, path: Path) -> None:
    """Rename a finished temporary file onto its name, readable as a new file would be:
    mkstemp and safetensors both create files with mode 0600."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)
    os.replace(temporary, path)


def write_json_atomic(path: Path, data: dict) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, path)
