"""PyTorch is optional: `pip install chatapp` has none (the [torch] extra adds it), the built-in model
goes by one name with or without it, torch-only commands say what to install, `make` picks the
right torch build, and `python -m chatapp` works from any folder. The light install itself, built and
driven for real: tests/system/test_light_install.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import tomllib

from tests.helpers.fake_builtin import fake_builtin
from tests.helpers.paths import ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def requirement_names(requirements: list[str]) -> set[str]:
    return {r.split(";")[0].split(">")[0].split("=")[0].split("[")[0].strip().lower() for r in requirements}


def test_torch_is_the_extras_alone():
    base = requirement_names(PYPROJECT["project"]["dependencies"])
    extra = requirement_names(PYPROJECT["project"]["optional-dependencies"]["torch"])
    assert "torch" not in base and "matplotlib" not in base
    assert {"torch", "matplotlib"} <= extra
    assert {"llama-cpp-python", "textual", "uvicorn", "httpx", "huggingface_hub"} <= base


@pytest.fixture
def builtin(tmp_path, monkeypatch):
    """The light install's built-in folder (model folders and the chat model's Q8_0 GGUF), torch or not."""
    from chatapp import commands
    from chatapp.models import registry

    monkeypatch.setattr(registry, "BUILTIN_DIR", tmp_path / "builtin")
    fake_builtin(tmp_path / "builtin", ["shakespeare-base", "shakespeare-chat", "shakespeare-chat-q8_0.gguf"])

    def torch(available: bool) -> None:
        monkeypatch.setattr(registry, "torch_available", lambda: available)
        monkeypatch.setattr(commands, "torch_available", lambda: available)

    return torch


def test_without_torch_the_builtin_model_is_its_gguf_by_the_same_name(builtin):
    from chatapp.models.registry import list_models
    from chatapp.models.resolve import model_spec, resolve_model

    builtin(False)
    default = resolve_model(None)
    assert (default.name, default.path.name, default.kind) == ("shakespeare-chat", "shakespeare-chat-q8_0.gguf", "gguf")
    assert resolve_model("shakespeare-chat") == default == resolve_model(model_spec(default))
    assert resolve_model("shakespeare-base").kind == "folder"  # no GGUF of it: the engine says torch is missing
    listed = {(ref.name, ref.kind) for ref in list_models() if ref.source == "built-in"}
    assert listed == {("shakespeare-chat", "gguf"), ("shakespeare-base", "folder")}
    source = resolve_model(None, runnable=False)  # what `chatapp export` reads
    assert (source.name, source.kind) == ("shakespeare-chat", "folder")


def test_with_torch_the_builtin_model_is_its_folder(builtin):
    from chatapp.models.registry import list_models
    from chatapp.models.resolve import resolve_model

    builtin(True)
    assert (resolve_model(None).name, resolve_model(None).kind) == ("shakespeare-chat", "folder")
    assert resolve_model("shakespeare-chat").kind == "folder"
    assert resolve_model("shakespeare-chat-q8_0").kind == "gguf"
    assert len([ref for ref in list_models() if ref.source == "built-in"]) == 3


def test_torch_only_commands_say_what_to_install_in_one_line(builtin, monkeypatch):
    from chatapp.commands import require_torch

    builtin(False)
    with pytest.raises(ValueError) as installed:
        require_torch("`chatapp train`")
    message = str(installed.value)
    assert "pip install 'chatapp[torch]'" in message and "download.pytorch.org/whl/cpu" in message
    monkeypatch.setattr(sys, "frozen", True, raising=False)  # the desktop bundle
    with pytest.raises(ValueError) as bundled:
        require_torch("`chatapp train`")
    assert "desktop bundle" in str(bundled.value) and "pip install 'chatapp[torch]'" in str(bundled.value)
    assert "\n" not in message + str(bundled.value)
    builtin(True)
    require_torch("`chatapp train`")


def test_python_m_chatapp_from_a_folder_holding_model_py(tmp_path):
    (tmp_path / "model.py").write_text("raise SystemExit('the model.py of this folder was imported')\n")
    (tmp_path / "quant").mkdir()
    (tmp_path / "quant" / "__init__.py").write_text("raise SystemExit('the quant/ of this folder was imported')\n")
    result = subprocess.run(
        [sys.executable, "-m", "chatapp", "models", "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert any(model["name"] == "shakespeare-chat" for model in json.loads(result.stdout))


def test_python_m_chatapp_from_the_clone_keeps_its_packages():
    result = subprocess.run(
        [sys.executable, "-m", "chatapp", "--version"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and result.stdout.startswith("chatapp "), result.stderr


# --- which torch `make setup` installs ---

FAKE_PYTHON = """#!/bin/sh
# stands in for python: `-m venv DIR` makes DIR/bin/{python,pip}; `-c` (the index check) exits $INDEX_REACHABLE
if [ "$1" = "-m" ] && [ "$2" = venv ]; then
    mkdir -p "$3/bin"
    cp "$0" "$3/bin/python"
    printf '#!/bin/sh\\necho "pip $*" >> "$CALLS"\\n' > "$3/bin/pip"
    chmod +x "$3/bin/pip"
    exit 0
fi
[ "$1" = "-c" ] && exit "$INDEX_REACHABLE"
exit 1
"""


@pytest.mark.parametrize(
    "gpu, reachable, torch_install",
    [
        (False, True, "pip install --quiet torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"),
        (True, True, "pip install --quiet torch==2.13.0"),  # PyPI's default (CUDA) build
        (False, False, "pip install --quiet torch==2.13.0"),  # this machine: the local CPU wheel
    ],
)
def test_make_setup_picks_the_torch_build(tmp_path, gpu, reachable, torch_install):
    if sys.platform != "linux":
        pytest.fail("the torch choice is Linux's; this test runs on Linux")
    tools = tmp_path / "tools"
    tools.mkdir()
    python = tools / "python3"
    python.write_text(FAKE_PYTHON)
    python.chmod(0o755)
    # stands in for the real one, GPU or not: this test may run on a machine with a GPU
    (tools / "nvidia-smi").write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H100'\n" if gpu else "#!/bin/sh\nexit 9\n")
    (tools / "nvidia-smi").chmod(0o755)
    calls = tmp_path / "calls.txt"
    venv = tmp_path / "venv"
    result = subprocess.run(
        ["make", "--no-print-directory", f"VENV={venv}", f"PYTHON={python}", "setup"],
        cwd=ROOT,
        env={
            "PATH": f"{tools}:/usr/bin:/bin",
            "CALLS": str(calls),
            "INDEX_REACHABLE": "0" if reachable else "1",
            "HOME": str(tmp_path),
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert calls.read_text().splitlines() == [
        "pip install --quiet --upgrade pip",
        torch_install,
        "pip install --quiet -e .[torch,test]",
    ]
    assert (venv / ".installed").exists() and (venv / ".installed-light").exists()


def test_make_chat_setup_installs_no_torch(tmp_path):
    tools = tmp_path / "tools"
    tools.mkdir()
    python = tools / "python3"
    python.write_text(FAKE_PYTHON)
    python.chmod(0o755)
    calls = tmp_path / "calls.txt"
    result = subprocess.run(
        ["make", "--no-print-directory", f"VENV={tmp_path / 'venv'}", f"PYTHON={python}", "setup-light"],
        cwd=ROOT,
        env={"PATH": f"{tools}:/usr/bin:/bin", "CALLS": str(calls), "INDEX_REACHABLE": "0", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert calls.read_text().splitlines() == ["pip install --quiet --upgrade pip", "pip install --quiet -e ."]
