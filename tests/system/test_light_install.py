"""The light install, as `pip install chatapp` gives it: the wheel built from this tree in a fresh venv
without torch (packaging/light_install.py, kept in build/light-venv while the wheel's content is the
same; `make test-light` starts it afresh). Every command that needs no torch runs from it with an empty
HOME, in a folder of the user's own; the torch-only ones say in one line what to install.

A missing dependency or a torch import on the llama.cpp path fails here, and not in the main venv,
which has everything.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers.paths import ROOT
from tests.helpers.programs import screenshot_settings, screenshot_text, serving

pytestmark = pytest.mark.slow

TORCH_HINT = "pip install 'chatapp[torch]'"


@dataclass
class LightInstall:
    venv: Path

    @property
    def bin(self) -> Path:
        return self.venv / "bin"


@pytest.fixture(scope="module")
def light() -> LightInstall:
    made = subprocess.run(
        [sys.executable, str(ROOT / "packaging" / "light_install.py"), "--venv", str(ROOT / "build" / "light-venv")],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert made.returncode == 0, f"light_install.py failed:\n{made.stderr[-6000:]}"
    return LightInstall(Path(made.stdout.strip()))


@pytest.fixture
def user(tmp_path) -> dict:
    """An empty HOME, the venv's programs and the system's on the PATH, a folder of the user's own."""
    home, cwd = tmp_path / "home", tmp_path / "somewhere"
    home.mkdir()
    cwd.mkdir()
    return {"HOME": str(home), "LANG": "C.UTF-8", "TERM": "xterm-256color", "cwd": cwd}


def chatapp(light: LightInstall, *args: str, user: dict, timeout: float = 120, **env) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in user.items() if k != "cwd"} | {"PATH": f"{light.bin}:/usr/bin:/bin"} | env
    return subprocess.run(
        [str(light.bin / "chatapp"), *args],
        env=environment,
        cwd=user["cwd"],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def test_no_torch_and_pip_check_is_clean(light):
    installed = subprocess.run(
        [str(light.bin / "python"), "-m", "pip", "list", "--format", "json"], capture_output=True, text=True
    )
    names = {package["name"].lower() for package in json.loads(installed.stdout)}
    assert "chatapp" in names and "llama_cpp_python" in names | {n.replace("-", "_") for n in names}
    assert not names & {"torch", "matplotlib", "triton", "transformers"}, names
    checked = subprocess.run([str(light.bin / "python"), "-m", "pip", "check"], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_builtin_model_is_named_shakespeare_chat_and_replies(light, user):
    version = chatapp(light, "--version", user=user)
    assert version.returncode == 0 and version.stdout.strip().startswith("chatapp "), version.stderr

    listed = chatapp(light, "models", "--json", user=user)
    assert listed.returncode == 0, listed.stderr
    default = [model for model in json.loads(listed.stdout) if model.get("default")]
    assert [(m["name"], m["kind"]) for m in default] == [("shakespeare-chat", "gguf")], listed.stdout

    for named in ((), ("--model", "shakespeare-chat")):
        reply = chatapp(light, "run", "Good morrow!", *named, "--max-tokens", "8", "--seed", "1", "--json", user=user)
        assert reply.returncode == 0, reply.stderr
        result = json.loads(reply.stdout)
        assert (result["model"], result["backend"]) == ("shakespeare-chat", "llama.cpp")
        assert result["completion_tokens"] > 0


def test_export_and_eval_of_the_builtin_model(light, user):
    exported = chatapp(light, "export", "-o", "mine.gguf", user=user)  # no model named: the built-in one
    assert exported.returncode == 0, exported.stderr
    assert (user["cwd"] / "mine.gguf").read_bytes()[:4] == b"GGUF"

    text = user["cwd"] / "verse.txt"
    text.write_text("Shall I compare thee to a summer's day? Thou art more lovely and more temperate.\n" * 40)
    evaluated = chatapp(light, "eval", "mine.gguf", "--data", str(text), "--json", user=user)
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["perplexity"] > 1


@pytest.mark.parametrize(
    "args",
    [
        ("train", "--out", "model"),
        ("finetune", "shakespeare-chat", "--out", "tuned"),
        ("eval", str(ROOT / "chatapp" / "builtin" / "shakespeare-base")),
    ],
)
def test_torch_commands_say_what_to_install(light, user, args):
    result = chatapp(light, *args, user=user)
    assert result.returncode == 1, result.stdout
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert TORCH_HINT in result.stderr and "Traceback" not in result.stderr


def test_serve_then_run_against_it(light, user):
    environment = {k: v for k, v in user.items() if k != "cwd"} | {"PATH": f"{light.bin}:/usr/bin:/bin"}
    with serving(light.bin / "chatapp", environment, user["cwd"]) as url:
        reply = chatapp(light, "run", "Hail!", "--endpoint", url, "--max-tokens", "8", "--json", user=user)
        assert reply.returncode == 0, reply.stderr
        assert json.loads(reply.stdout)["model"] == "shakespeare-chat"


def test_pull_has_its_library(light, user):
    result = chatapp(light, "pull", "someone/some-model-GGUF:Q4_K_M", user=user, HF_ENDPOINT="http://127.0.0.1:9")
    assert result.returncode == 1
    assert "No module named" not in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_tui_first_frame_names_the_model(light, user, tmp_path):
    shots = tmp_path / "shots"
    shots.mkdir()
    result = chatapp(
        light,
        user=user,
        **screenshot_settings(shots),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    text = screenshot_text(shots / "tui.svg")
    assert "shakespeare-chat · llama.cpp" in text, text
    assert "could not be loaded" not in text


def test_python_m_chatapp_in_a_folder_holding_model_py(light, user):
    (user["cwd"] / "model.py").write_text("raise SystemExit('the model.py of this folder was imported')\n")
    (user["cwd"] / "quant").mkdir()
    (user["cwd"] / "quant" / "__init__.py").write_text("raise SystemExit('the quant/ of this folder was imported')\n")
    environment = {k: v for k, v in user.items() if k != "cwd"} | {"PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [str(light.bin / "python"), "-m", "chatapp", "models"],
        env=environment,
        cwd=user["cwd"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "shakespeare-chat" in result.stdout
