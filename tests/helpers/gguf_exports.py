"""The models the GGUF tests run on, and one export per (model, type) for the whole session."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from tests.helpers.paths import ROOT  # noqa: E402

# CHATAPP_TEST_SHIPPED_MODEL stands another folder in for the shipped model (e.g. a checkpoint mid-training)
BUILTIN_MODEL = Path(os.environ.get("CHATAPP_TEST_SHIPPED_MODEL") or ROOT / "chatapp" / "builtin" / "shakespeare-base")
MODEL_PARAMS = ["tiny"] + (["shipped"] if BUILTIN_MODEL.is_dir() else [])

_exports: dict[tuple[str, str], tuple[Path, object]] = {}
_workdir: list[Path] = []


def workdir() -> Path:
    if not _workdir:
        _workdir.append(Path(tempfile.mkdtemp(prefix="chatapp-quant-tests-")))
    return _workdir[0]


def exported(model_dir: Path, kind: str):
    """(path, ExportReport) of the model exported as `kind`, made once per session."""
    from quant.gguf_export import export_model

    key = (str(model_dir), kind)
    if key not in _exports:
        out = workdir() / f"{Path(model_dir).name}-{kind}.gguf"
        report = export_model(model_dir, out, kind, log_dir=workdir() / "logs")
        _exports[key] = (out, report)
    return _exports[key]


def cleanup() -> None:
    import shutil

    for path in _workdir:
        shutil.rmtree(path, ignore_errors=True)
    _workdir.clear()
    _exports.clear()


import atexit  # noqa: E402

atexit.register(cleanup)
