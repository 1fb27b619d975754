"""The desktop bundle, built for real (once per test session) and used as a user would.

`python packaging/build.py` makes the torch-free venv (kept in build/ between
runs), exports the built-in model to GGUF and runs PyInstaller into a
temporary dist folder. Then: --version, `models` and a one-shot reply with a
PATH that holds nothing and an empty HOME, from another working directory; a
Textual screenshot of the TUI; install.sh and uninstall.sh into a temporary
HOME. Slow (minutes: PyInstaller), and CI runs it.

CHATAPP_TEST_BUNDLE=dist/chatapp-VERSION-PLATFORM reuses a bundle built
earlier instead of building one.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers.bundle import build, desktop_file_validate, files_under, read_desktop_entry
from tests.helpers.paths import ROOT
from tests.helpers.programs import screenshot_settings, screenshot_text, serving

MAX_MB = 150

pytestmark = pytest.mark.slow


@dataclass
class Bundle:
    stage: Path  # dist/chatapp-VERSION-PLATFORM: the program folder, install.sh, ...
    folder: Path  # the PyInstaller folder
    program: Path
    archive: Path | None


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Bundle:
    prebuilt = os.environ.get("CHATAPP_TEST_BUNDLE")
    stem = f"chatapp-{build.version()}-{build.platform_tag()}"
    if prebuilt:
        stage = Path(prebuilt).resolve()
    else:
        from chatapp.models.registry import default_model

        default_model()  # fails clearly when the built-in model is missing
        dist = tmp_path_factory.mktemp("dist")
        result = subprocess.run(
            [sys.executable, str(ROOT / "packaging" / "build.py"), "--dist", str(dist)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=3600,
        )
        assert result.returncode == 0, f"build.py failed:\n{(result.stdout + result.stderr)[-6000:]}"
        stage = dist / stem
    archive = stage.parent / f"{stage.name}.tar.gz"
    return Bundle(stage, stage / "chatapp", stage / "chatapp" / "chatapp", archive if archive.exists() else None)


@pytest.fixture
def user(tmp_path) -> dict:
    """A user with an empty HOME, nothing on the PATH (no Python), in a folder of their own."""
    home, empty_bin, cwd = tmp_path / "home", tmp_path / "empty-bin", tmp_path / "somewhere"
    for folder in (home, empty_bin, cwd):
        folder.mkdir()
    env = {"HOME": str(home), "PATH": str(empty_bin), "LANG": "C.UTF-8", "TERM": "xterm-256color"}
    return {"env": env, "cwd": cwd, "home": home}


def run_program(program: Path, *args: str, user: dict, timeout: float = 120, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(program), *args],
        env={**user["env"], **env},
        cwd=user["cwd"],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def shipped_model(bundle: Bundle) -> Path:
    models = sorted((bundle.folder / "_internal" / "chatapp" / "builtin").glob("*.gguf"))
    assert len(models) == 1, models
    return models[0]


def gguf_name(path: Path) -> str:
    from gguf import GGUFReader

    field = GGUFReader(path).fields["general.name"]
    return bytes(field.parts[field.data[0]]).decode("utf-8")


def test_bundle_fits_the_budget_without_torch(bundle):
    size_mb = build.folder_size(bundle.folder) / 1e6
    assert size_mb <= MAX_MB, f"the bundle is {size_mb:.1f} MB"
    assert not [p for p in bundle.folder.rglob("*") if p.name in ("torch", "matplotlib", "transformers")]
    assert not list(bundle.folder.rglob("*.safetensors"))  # the model ships as GGUF only
    assert (bundle.folder / "_internal" / "chatapp" / "models" / "suggested_models.toml").is_file()  # download screen
    shipped_model(bundle)
    for name in ("install.sh", "uninstall.sh", "chatapp.desktop", "README.txt", "icons/chatapp.svg"):
        assert (bundle.stage / name).is_file(), name


def test_runs_on_glibc_2_35_and_says_so_on_older(bundle):
    assert not [p.name for p in bundle.folder.rglob("*") if p.name.startswith(("libstdc++.so", "libgcc_s.so"))]
    needed = build.glibc_needed(bundle.folder)  # Ubuntu 22.04's glibc is 2.35
    assert needed is not None and tuple(int(part) for part in needed.split(".")) <= (2, 35), needed
    assert f'need="{needed}"' in bundle.program.read_text()  # the launcher checks for it
    assert (bundle.folder / "chatapp-bin").is_file()


def test_archive_and_checksum(bundle):
    if bundle.archive is None:
        pytest.fail(f"no archive next to {bundle.stage} (built with --no-archive?)")
    assert re.fullmatch(r"chatapp-\d+\.\d+\.\d+.*-linux-[a-z0-9_]+\.tar\.gz", bundle.archive.name)
    digest, name = (bundle.archive.parent / f"{bundle.archive.name}.sha256").read_text().split()
    assert name == bundle.archive.name
    assert digest == hashlib.sha256(bundle.archive.read_bytes()).hexdigest()
    with tarfile.open(bundle.archive) as tar:
        names = tar.getnames()
    assert f"{bundle.stage.name}/chatapp/chatapp" in names and f"{bundle.stage.name}/install.sh" in names
    assert all(n == bundle.stage.name or n.startswith(bundle.stage.name + "/") for n in names)


def test_version_models_and_a_reply_with_nothing_on_the_path(bundle, user):
    version = run_program(bundle.program, "--version", user=user)
    assert version.returncode == 0 and version.stdout.strip() == f"chatapp {build.version()}", version

    models = run_program(bundle.program, "models", "--json", user=user)
    assert models.returncode == 0, models.stderr
    [model] = json.loads(models.stdout)
    assert model["source"] == "built-in" and model["kind"] == "gguf"
    assert Path(model["path"]) == shipped_model(bundle)

    reply = run_program(
        bundle.program, "run", "Good morrow, who art thou?", "--max-tokens", "24", "--seed", "1", "--json", user=user
    )
    assert reply.returncode == 0, reply.stderr
    result = json.loads(reply.stdout)
    assert result["backend"] == "llama.cpp" and result["model"] == model["name"]
    assert result["completion_tokens"] > 0 and result["text"].strip()
    assert (user["home"] / ".local" / "share" / "chatapp").is_dir()  # user data under the empty HOME


def test_torch_commands_fail_with_a_message_not_a_traceback(bundle, user):
    result = run_program(bundle.program, "train", "--out", "model", user=user)
    assert result.returncode == 1
    assert "pip install 'chatapp[torch]'" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_serve_then_run_against_it_with_endpoint(bundle, user):
    with serving(bundle.program, user["env"], user["cwd"]) as url:
        reply = run_program(bundle.program, "run", "Hail!", "--endpoint", url, "--max-tokens", "8", "--json", user=user)
        assert reply.returncode == 0, reply.stderr
        assert json.loads(reply.stdout)["completion_tokens"] > 0


def test_pull_has_its_library(bundle, user):
    result = run_program(
        bundle.program, "pull", "someone/some-model-GGUF:Q4_K_M", user=user, HF_ENDPOINT="http://127.0.0.1:9"
    )
    assert result.returncode == 1
    assert "No module named" not in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_tui_screenshot_shows_the_model(bundle, user, tmp_path):
    shots = tmp_path / "shots"
    shots.mkdir()
    result = run_program(
        bundle.program,
        user=user,
        timeout=120,
        **screenshot_settings(shots),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    text = screenshot_text(shots / "tui.svg")
    assert "chatapp" in text and "Conversations" in text and "New conversation" in text
    name = gguf_name(shipped_model(bundle))
    assert f"{name} · llama.cpp" in text, f"the header does not name the model {name!r}:\n{text}"
    assert "could not be loaded" not in text


def test_install_and_uninstall_the_real_bundle(bundle, user):
    env = {**user["env"], "PATH": "/usr/bin:/bin"}  # the scripts need sh, cp, ln; the program needs nothing
    home = user["home"]
    installed = subprocess.run(["/bin/sh", str(bundle.stage / "install.sh")], env=env, capture_output=True, text=True)
    assert installed.returncode == 0 and installed.stderr == "", installed.stderr

    bin_dir = home / ".local" / "bin"
    only_chatapp = {**user["env"], "PATH": str(bin_dir)}
    version = subprocess.run(
        ["chatapp", "--version"], env=only_chatapp, cwd=user["cwd"], capture_output=True, text=True
    )
    assert version.stdout.strip() == f"chatapp {build.version()}", version.stderr
    reply = subprocess.run(
        ["chatapp", "run", "Hail!", "--max-tokens", "8", "--seed", "1"],
        env=only_chatapp,
        cwd=user["cwd"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert reply.returncode == 0 and reply.stdout.strip(), reply.stderr

    entry = home / ".local" / "share" / "applications" / "chatapp.desktop"
    checked = subprocess.run([desktop_file_validate(), str(entry)], capture_output=True, text=True)
    assert checked.returncode == 0 and not checked.stdout.strip(), checked.stdout
    program = read_desktop_entry(entry)["Exec"].strip('"')
    assert subprocess.run([program, "--version"], env=user["env"], capture_output=True).returncode == 0

    removed = subprocess.run(
        ["/bin/sh", str(home / ".local/opt/chatapp/uninstall.sh")], env=env, capture_output=True, text=True
    )
    assert removed.returncode == 0, removed.stderr
    left = files_under(home)
    assert left and all(f.startswith((".local/share/chatapp/", ".config/chatapp/")) for f in left), left
