"""Shared by the packaging tests: packaging/build.py as a module, desktop-file-validate, file listings."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

from tests.helpers.paths import ROOT  # noqa: E402

PACKAGING = ROOT / "packaging"
ICONS = PACKAGING / "icons"


def load_script(name: str):
    """A script under packaging/ (not a package) imported as a module."""
    spec = importlib.util.spec_from_file_location(
        f"packaging_{name.replace('/', '_').removesuffix('.py')}", PACKAGING / name
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build = load_script("build.py")


def desktop_file_validate() -> str:
    tool = shutil.which("desktop-file-validate")
    if tool is None:
        pytest.fail("desktop-file-validate is missing: apt-get install desktop-file-utils")
    return tool


def read_desktop_entry(path: Path) -> dict[str, str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "[Desktop Entry]"
    return dict(line.split("=", 1) for line in lines[1:] if "=" in line)


def files_under(folder: Path) -> set[str]:
    """Every file and link under folder, relative to it (folders themselves are not counted)."""
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() or p.is_symlink()}
