"""Which GGUF the bundle ships for the built-in model: the checked-in one while it is what exporting the
model folder gives now (compared by content: tensors and metadata keys, never file times), else a
fresh export (packaging/build.py, fresh_if_stale)."""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

from tests.helpers.bundle import build
from tests.helpers.paths import BUILTIN_DIR

FOLDER = BUILTIN_DIR / "shakespeare-chat"


def test_a_fresh_export_is_current_and_reused(tmp_path):
    py, work = Path(sys.executable), tmp_path / "work"
    fresh = build.exported_q8_0(py, work, FOLDER, FOLDER.name)
    shipped = tmp_path / "checked-in" / "shakespeare-chat-q8_0.gguf"
    shipped.parent.mkdir()
    shutil.copy2(fresh, shipped)
    os.utime(shipped, (0, 0))  # older than the weights, as on a fresh clone: content decides, not times
    assert build.fresh_if_stale(py, work, shipped, FOLDER) == shipped
    made = fresh.stat().st_mtime_ns
    time.sleep(0.01)
    assert build.exported_q8_0(py, work, FOLDER, FOLDER.name) == fresh and fresh.stat().st_mtime_ns == made


def test_a_file_with_other_weights_is_replaced_by_a_fresh_export(tmp_path):
    py, work = Path(sys.executable), tmp_path / "work"
    other = BUILTIN_DIR / "shakespeare-base"
    stale = build.exported_q8_0(py, work, other, "other")  # the base model's weights under the chat model's name
    assert build.fresh_if_stale(py, work, stale, FOLDER) == work / "gguf" / "shakespeare-chat-q8_0.gguf"
