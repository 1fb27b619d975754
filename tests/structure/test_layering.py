"""The arrows of docs/ARCHITECTURE.md, as import-linter contracts (pyproject.toml's
[tool.importlinter]): chatapp -> quant -> model and never back, textual only in
chatapp.tui, llama_cpp only in quant, no torch in the torch-free modules, no
import cycles in chatapp or quant. Kept here, and shown to break when a
forbidden import is added."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, as a package
    import tomli as tomllib
from pathlib import Path

from tests.helpers.paths import ROOT  # noqa: E402

PACKAGES = ("chatapp", "quant", "model")
CONTRACTS = [
    c["name"] for c in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
]


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """`lint-imports` on the packages under root (PYTHONPATH puts them before the installed ones)."""
    program = Path(sys.executable).with_name("lint-imports")
    command = [str(program)] if program.exists() else [shutil.which("lint-imports") or "lint-imports"]
    env = {**os.environ, "PYTHONPATH": str(root), "COLUMNS": "200"}  # one line per contract
    return subprocess.run([*command, "--no-cache"], cwd=root, env=env, capture_output=True, text=True, timeout=300)


def test_the_contracts_are_kept():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    for name in CONTRACTS:
        assert f"{name} KEPT" in result.stdout


# one forbidden import per contract: (file, the line added at its end)
BREAKS = [
    ("model/text/tokenizer.py", "import chatapp.paths"),  # model -> chatapp
    ("chatapp/settings.py", "import textual"),  # textual outside chatapp.tui
    ("chatapp/history/store.py", "import llama_cpp"),  # llama.cpp outside quant
    ("quant/gguf_vocab.py", "import model.network.gpt"),  # torch, one module away
    ("quant/gguf_layout.py", "import quant.gguf_export"),  # a cycle: gguf_export imports gguf_layout
]


def test_each_contract_breaks_on_a_forbidden_import(tmp_path):
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__", "data", "builtin")
        )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    assert lint_imports(tmp_path).returncode == 0  # the copy is kept, as the tree is
    for path, line in BREAKS:
        with open(tmp_path / path, "a", encoding="utf-8") as f:
            f.write(f"\n{line}\n")
    result = lint_imports(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    for name in CONTRACTS:
        assert f"{name} BROKEN" in result.stdout, result.stdout
