"""The desktop packaging without building the bundle: the desktop entry, the
icons, install.sh/uninstall.sh on a stand-in program, the macOS launcher, the
Inno Setup script, and the built-in model's resolution without torch.

The real bundle is built and exercised in test_packaging_bundle.py.
Needs desktop-file-validate (Debian package desktop-file-utils); a missing one
fails with a clear message, never a skip.
"""

from __future__ import annotations

import os
import plistlib
import re
import shutil
import stat
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.bundle import (
    ICONS,
    PACKAGING,
    ROOT,
    build,
    desktop_file_validate,
    files_under,
    load_script,
    read_desktop_entry,
)
from tests.helpers.fake_builtin import fake_builtin

# --- the desktop entry and the icons ---


def test_desktop_entry_is_valid_and_opens_a_terminal():
    entry_path = PACKAGING / "linux" / "chatapp.desktop"
    result = subprocess.run([desktop_file_validate(), str(entry_path)], capture_output=True, text=True)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr
    entry = read_desktop_entry(entry_path)
    assert entry["Type"] == "Application"
    assert entry["Terminal"] == "true"
    assert "ConsoleOnly" in entry["Categories"].split(";")
    assert entry["Icon"] == "chatapp"
    assert entry["Exec"] == "chatapp"  # install.sh points it at the installed program


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def png_pixels(data: bytes) -> bytes:
    idat, pos = b"", 8
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if kind == b"IDAT":
            idat += data[pos + 8 : pos + 8 + length]
        pos += 12 + length
    return zlib.decompress(idat)


def test_icons_exist_in_svg_and_png_sizes():
    root = ET.parse(ICONS / "chatapp.svg").getroot()
    assert root.tag.endswith("svg") and root.get("viewBox") == "0 0 256 256"
    for size in build.LINUX_ICON_SIZES:
        assert png_size((ICONS / f"chatapp-{size}.png").read_bytes()) == (size, size)

    ico = (ICONS / "chatapp.ico").read_bytes()
    reserved, kind, count = struct.unpack("<HHH", ico[:6])
    assert (reserved, kind) == (0, 1) and count >= 5
    for i in range(count):
        width, _, _, _, _, bpp, length, offset = struct.unpack("<BBBBHHII", ico[6 + 16 * i : 22 + 16 * i])
        assert bpp == 32 and png_size(ico[offset : offset + length])[0] == (width or 256)

    icns = (ICONS / "chatapp.icns").read_bytes()
    assert icns[:4] == b"icns" and struct.unpack(">I", icns[4:8])[0] == len(icns)
    pos, kinds = 8, []
    while pos < len(icns):
        kind, length = icns[pos : pos + 4], struct.unpack(">I", icns[pos + 4 : pos + 8])[0]
        png_size(icns[pos + 8 : pos + length])
        kinds.append(kind)
        pos += length
    assert {b"ic07", b"ic08", b"ic09", b"ic10"} <= set(kinds)


def test_committed_icons_match_the_drawing(tmp_path):
    """make_icons.py is the source: the committed files are what it draws now."""
    make_icons = load_script("icons/make_icons.py")
    make_icons.main(tmp_path)
    assert (tmp_path / "chatapp.svg").read_text() == (ICONS / "chatapp.svg").read_text()
    for size in make_icons.PNG_SIZES:
        fresh, committed = (tmp_path / f"chatapp-{size}.png").read_bytes(), (ICONS / f"chatapp-{size}.png").read_bytes()
        a, b = (np.frombuffer(png_pixels(data), dtype=np.uint8).astype(int) for data in (fresh, committed))
        assert a.shape == b.shape and np.abs(a - b).max() <= 1, f"chatapp-{size}.png: run packaging/icons/make_icons.py"


# --- install.sh and uninstall.sh, on a stand-in program ---


def fake_stage(tmp_path: Path) -> Path:
    """The unpacked archive's layout, with a shell script standing in for the program."""
    stage = tmp_path / "chatapp-0.0.0-linux-x86_64"
    program = stage / "chatapp" / "chatapp"
    (stage / "chatapp" / "_internal" / "chatapp" / "builtin").mkdir(parents=True)
    (stage / "chatapp" / "_internal" / "chatapp" / "builtin" / "model.gguf").write_bytes(b"GGUF")
    program.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = "--version" ]; then echo "chatapp 0.0.0"; exit 0; fi\n'
        'mkdir -p "$HOME/.local/share/chatapp" "$HOME/.config/chatapp"\n'
        'echo conversation > "$HOME/.local/share/chatapp/history.sqlite3"\n'
        'echo "[app]" > "$HOME/.config/chatapp/settings.toml"\n'
    )
    program.chmod(0o755)
    build.add_linux_launcher(stage / "chatapp", None)
    build.stage_linux(stage / "chatapp", stage)
    return stage


def user_env(home: Path) -> dict[str, str]:
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    return env


def sh(script: Path, *args: str, home: Path, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["/bin/sh", str(script), *args], env=user_env(home), capture_output=True, text=True)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture
def home(tmp_path) -> Path:
    home = tmp_path / "home dir"  # a space: every path in the scripts is quoted
    home.mkdir()
    return home


def test_shell_scripts_parse():
    for script in ("install.sh", "uninstall.sh", "build_in_old_root.sh"):
        subprocess.run(["/bin/sh", "-n", str(PACKAGING / "linux" / script)], check=True)
        if shutil.which("shellcheck"):
            subprocess.run(["shellcheck", "-s", "sh", str(PACKAGING / "linux" / script)], check=True)


def test_install_then_uninstall_leaves_only_the_users_data(tmp_path, home):
    stage = fake_stage(tmp_path)
    installed = sh(stage / "install.sh", home=home)
    assert "is not on your PATH" in installed.stdout
    assert installed.stderr == ""  # no warning (desktop-file-validate runs on the entry it writes)

    app = home / ".local" / "opt" / "chatapp"
    link = home / ".local" / "bin" / "chatapp"
    entry = home / ".local" / "share" / "applications" / "chatapp.desktop"
    assert link.is_symlink() and link.resolve() == (app / "chatapp").resolve()
    version = subprocess.run(
        ["chatapp", "--version"], env={**user_env(home), "PATH": str(link.parent)}, capture_output=True, text=True
    )
    assert version.stdout.strip() == "chatapp 0.0.0"
    assert (app / "_internal" / "chatapp" / "builtin" / "model.gguf").is_file()
    assert (app / "uninstall.sh").stat().st_mode & stat.S_IXUSR
    for size in build.LINUX_ICON_SIZES:
        assert (home / f".local/share/icons/hicolor/{size}x{size}/apps/chatapp.png").is_file()
    assert (home / ".local/share/icons/hicolor/scalable/apps/chatapp.svg").is_file()
    assert read_desktop_entry(entry)["Exec"] == f'"{app / "chatapp"}"'
    result = subprocess.run([desktop_file_validate(), str(entry)], capture_output=True, text=True)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout

    subprocess.run([str(link)], env=user_env(home), check=True)  # the user chats: data appears
    out = sh(app / "uninstall.sh", home=home).stdout
    assert "kept" in out
    assert files_under(home) == {".local/share/chatapp/history.sqlite3", ".config/chatapp/settings.toml"}
    assert not (home / ".local" / "opt").exists() and not (home / ".local" / "bin").exists()
    assert not (home / ".local" / "share" / "icons").exists()


def test_reinstall_replaces_and_purge_removes_everything(tmp_path, home):
    stage = fake_stage(tmp_path)
    sh(stage / "install.sh", home=home)
    subprocess.run([str(home / ".local/bin/chatapp")], env=user_env(home), check=True)
    out = sh(stage / "install.sh", home=home).stdout  # again: replaces the first install
    assert "replacing" in out
    manifest = (home / ".local/opt/chatapp/install-manifest.txt").read_text().splitlines()
    assert len(manifest) == len(set(manifest))  # no duplicates
    assert (home / ".local/share/chatapp/history.sqlite3").is_file()  # the reinstall kept the data
    sh(stage / "uninstall.sh", "--purge", home=home)  # the archive's copy works too
    assert files_under(home) == set()


def test_purge_after_a_plain_uninstall(tmp_path, home):
    stage = fake_stage(tmp_path)
    sh(stage / "install.sh", home=home)
    subprocess.run([str(home / ".local/bin/chatapp")], env=user_env(home), check=True)
    out = sh(home / ".local/opt/chatapp/uninstall.sh", home=home).stdout  # removes itself
    (later,) = [line for line in out.splitlines() if "to delete them later:" in line]
    command = later.split("to delete them later:")[1].split("(")[0]
    assert command.strip().startswith("rm -rf ")
    assert files_under(home) == {".local/share/chatapp/history.sqlite3", ".config/chatapp/settings.toml"}

    purged = sh(stage / "uninstall.sh", "--purge", home=home)  # the archive's copy, with nothing installed
    assert "no chatapp installed" in purged.stdout and files_under(home) == set()

    (home / ".local/share/chatapp").mkdir(parents=True)
    (home / ".config/chatapp").mkdir(parents=True)
    (home / ".local/share/chatapp/history.sqlite3").write_text("again")
    (home / ".config/chatapp/settings.toml").write_text("again")
    subprocess.run(["/bin/sh", "-c", command], env=user_env(home), check=True)  # the printed command works
    assert files_under(home) == set()


def test_the_old_root_build_refuses_to_start_where_it_cannot_work(tmp_path):
    script = PACKAGING / "linux" / "build_in_old_root.sh"
    result = subprocess.run(["/bin/sh", str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
    assert ("needs root" if os.geteuid() != 0 else "run it from the repository root") in result.stderr
    assert list(tmp_path.iterdir()) == []  # nothing made


def system_glibc() -> tuple[int, int]:
    version = subprocess.run(["getconf", "GNU_LIBC_VERSION"], capture_output=True, text=True).stdout.split()[-1]
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


@pytest.mark.parametrize("needed, runs", [("2.0", True), (None, True), ("99.0", False), ("2.999", False)])
def test_the_launcher_says_in_one_line_when_glibc_is_too_old(tmp_path, needed, runs):
    folder = tmp_path / "chatapp"
    folder.mkdir()
    (folder / "chatapp").write_text('#!/bin/sh\necho "chatapp 0.0.0 $*"\n')
    (folder / "chatapp").chmod(0o755)
    build.add_linux_launcher(folder, needed)
    link_dir = tmp_path / "bin"
    link_dir.mkdir()
    (link_dir / "chatapp").symlink_to(folder / "chatapp")  # as install.sh links it: the launcher finds its folder
    result = subprocess.run([str(link_dir / "chatapp"), "--version"], env={"PATH": ""}, capture_output=True, text=True)
    if runs:
        assert result.returncode == 0 and result.stdout == "chatapp 0.0.0 --version\n", result.stderr
    else:
        assert result.returncode == 1 and result.stdout == ""
        assert len(result.stderr.strip().splitlines()) == 1 and f"needs {needed} or newer" in result.stderr


def test_glibc_needed_reads_the_symbol_versions(tmp_path):
    (tmp_path / "ls").write_bytes(Path(shutil.which("ls")).read_bytes())  # an ELF program of this system
    (tmp_path / "notes.txt").write_text("GLIBC_99.0 in a text file counts for nothing")
    needed = build.glibc_needed(tmp_path)
    assert needed is not None
    major, minor = (int(part) for part in needed.split("."))
    assert (2, 2) <= (major, minor) <= system_glibc()
    (tmp_path / "ls").unlink()
    assert build.glibc_needed(tmp_path) is None


def test_install_under_a_prefix_and_refusals(tmp_path, home):
    stage = fake_stage(tmp_path)
    prefix = tmp_path / "apps"
    sh(stage / "install.sh", "--prefix", str(prefix), home=home)
    assert (prefix / "bin" / "chatapp").is_symlink() and (prefix / "opt" / "chatapp" / "chatapp").is_file()
    missing = sh(stage / "uninstall.sh", home=home, check=False)  # the default prefix holds nothing
    assert missing.returncode == 1 and "no chatapp installed" in missing.stderr
    sh(stage / "uninstall.sh", "--prefix", str(prefix), home=home)
    assert files_under(prefix) == set() and files_under(home) == set()

    (home / ".local" / "bin").mkdir(parents=True)
    (home / ".local" / "bin" / "chatapp").write_text("pipx's chatapp\n")
    refused = sh(stage / "install.sh", home=home, check=False)
    assert refused.returncode == 1 and "already exists" in refused.stderr
    assert files_under(home) == {".local/bin/chatapp"}


# --- macOS and Windows: what can be checked here ---


def test_macos_app_launcher_opens_terminal(tmp_path):
    app = tmp_path / "chatapp.app"
    (app / "Contents" / "MacOS").mkdir(parents=True)
    (app / "Contents" / "MacOS" / "chatapp").write_text("#!/bin/sh\necho chatapp\n")
    (app / "Contents" / "Info.plist").write_bytes(
        plistlib.dumps(
            {"CFBundleExecutable": "chatapp", "CFBundleIdentifier": build.APP_ID, "CFBundleIconFile": "chatapp.icns"}
        )
    )
    build.macos_launcher(app)
    info = plistlib.loads((app / "Contents" / "Info.plist").read_bytes())
    assert info["CFBundleExecutable"] == "chatapp-launcher"
    assert info["CFBundleShortVersionString"] == build.version()
    launcher = app / "Contents" / "MacOS" / "chatapp-launcher"
    command = app / "Contents" / "MacOS" / "chatapp.command"
    for script in (launcher, command):
        assert script.stat().st_mode & stat.S_IXUSR
        subprocess.run(["/bin/sh", "-n", str(script)], check=True)
    assert "open -n -a Terminal" in launcher.read_text() and "chatapp.command" in launcher.read_text()
    assert '"$here/chatapp"' in command.read_text()


def test_inno_setup_script_installs_per_user_with_a_start_menu_shortcut():
    iss = (PACKAGING / "windows" / "chatapp.iss").read_text()
    assert "PrivilegesRequired=lowest" in iss
    assert 'Name: "{userprograms}\\chatapp"; Filename: "{app}\\chatapp.exe"' in iss
    assert "SetupIconFile=..\\icons\\chatapp.ico" in iss and (ICONS / "chatapp.ico").is_file()
    for define in ("AppVersion", "SourceDir", "OutputDir", "OutputBase"):
        assert f"#ifndef {define}" in iss and f"/D{define}=" in (PACKAGING / "build.py").read_text()


# --- the PyInstaller spec, as PyInstaller would read it ---

SPEC = PACKAGING / "chatapp.spec"
NEVER_BUNDLED = ("torch", "torchvision", "torchaudio", "triton", "transformers", "matplotlib", "pytest")
LOADED_BY_NAME = ("quant.llama_worker", "model.text.chat_template", "chatapp.tui.app", "chatapp.cli")
# what the bundle runs: the command line, the TUI, the llama.cpp engine, foreign chat templates
BUNDLE_RUNTIME = (
    "chatapp.cli",
    "chatapp.commands",
    "chatapp.tui.app",
    "quant.llama_worker",
    "quant.llama_engine",
    "quant.gguf_export",
    "model.text.chat_template",
    "jinja2.sandbox",
    "jinja2.ext",
    "chatapp.serving.server",  # chatapp serve
    "uvicorn",
    "chatapp.serving.endpoint",  # --endpoint
    "huggingface_hub",  # chatapp pull, imported when a pull starts
)


def submodules(package: str) -> list[str]:
    """PyInstaller's collect_submodules, from the files on disk (importing nothing)."""
    import importlib.util

    top, *rest = package.split(".")
    folder = Path(importlib.util.find_spec(top).submodule_search_locations[0], *rest)
    names = {package}
    for path in folder.rglob("*.py"):
        parts = path.relative_to(folder).with_suffix("").parts
        parts = parts[:-1] if parts[-1] == "__init__" else parts
        names.add(".".join((package, *parts)))
    return sorted(names)


def read_spec(text: str, tmp_path: Path, platform: str = "linux") -> dict:
    """What the spec hands PyInstaller (Analysis, EXE, ...), run with PyInstaller's helpers stubbed."""
    import types

    gguf = tmp_path / "shakespeare-chat-q8_0.gguf"
    gguf.write_bytes(b"GGUF")
    system_root = tmp_path / "Windows"
    (system_root / "System32").mkdir(parents=True, exist_ok=True)
    (system_root / "System32" / "vcomp140.dll").write_bytes(b"MZ")
    hooks = types.ModuleType("PyInstaller.utils.hooks")
    hooks.collect_submodules = submodules
    hooks.collect_data_files = lambda package: []
    hooks.collect_dynamic_libs = lambda package: [(f"<{package} libraries>", f"{package}/lib")]
    calls: dict = {}

    class Analysis:
        def __init__(self, scripts, **options):
            calls["Analysis"] = self
            self.options = options
            self.datas = [(str(Path(dest) / Path(src).name), src, "DATA") for src, dest in options["datas"]]
            self.binaries, self.pure, self.scripts = options["binaries"], [], scripts

    def recorder(name):
        def record(*args, **options):
            calls[name] = options
            return name

        return record

    spec_globals = {
        "SPECPATH": str(PACKAGING),
        "Analysis": Analysis,
        **{n: recorder(n) for n in ("PYZ", "EXE", "COLLECT", "BUNDLE")},
    }
    environ = {
        **os.environ,
        "CHATAPP_BUNDLE_GGUF": str(gguf),
        "CHATAPP_BUNDLE_NAME": "shakespeare-chat",
        "SystemRoot": str(system_root),
    }
    with pytest.MonkeyPatch.context() as patch:
        for name in ("PyInstaller", "PyInstaller.utils"):
            patch.setitem(sys.modules, name, types.ModuleType(name))
        patch.setitem(sys.modules, "PyInstaller.utils.hooks", hooks)
        patch.setattr(os, "environ", environ)
        patch.setattr(sys, "platform", platform)
        exec(compile(text, str(SPEC), "exec"), spec_globals)
    return calls


@pytest.fixture(scope="module")
def bundle_runtime() -> set[str]:
    """The top-level packages the bundle's code imports (beyond what Python's start loaded)."""
    code = (
        f"import sys\nbefore = set(sys.modules)\nimport {', '.join(BUNDLE_RUNTIME)}\n"
        "print(' '.join(sorted({m.split('.')[0] for m in set(sys.modules) - before})))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split())


def check_spec(calls: dict, runtime: set[str], platform: str = "linux") -> None:
    analysis = calls["Analysis"]
    excluded, hidden = set(analysis.options["excludes"]), set(analysis.options["hiddenimports"])
    assert set(NEVER_BUNDLED) <= excluded, f"not excluded: {set(NEVER_BUNDLED) - excluded}"
    assert not runtime & excluded, f"the bundle imports what the spec excludes: {runtime & excluded}"
    assert set(LOADED_BY_NAME) <= hidden, f"not collected: {set(LOADED_BY_NAME) - hidden}"
    for package in ("chatapp", "quant", "model", "textual.widgets", "rich._unicode_data"):  # loaded lazily, by name
        assert set(submodules(package)) <= hidden, f"{package}: not every submodule is collected"
    destinations = {dest for dest, _, _ in analysis.datas}  # after the spec renamed the GGUF
    needed = {
        "chatapp/tui/chatapp.tcss",
        "chatapp/builtin/shakespeare-chat.gguf",
        "model/data/shakespeare.tar.xz",
        "chatapp/models/suggested_models.toml",  # the download screen's list
    } | {f"chatapp/builtin/presets/{p.name}" for p in (ROOT / "chatapp" / "builtin" / "presets").glob("*.toml")}
    assert needed <= destinations, f"data files missing: {needed - destinations}"
    libraries = {src for src, _ in analysis.binaries}
    assert "<llama_cpp libraries>" in libraries, "llama.cpp's libraries are missing"
    if platform == "win32":
        assert any(src.endswith("vcomp140.dll") for src in libraries), "llama.cpp's OpenMP runtime is missing"
    assert analysis.scripts == [str(PACKAGING / "chatapp_main.py")], "another entry point"
    assert calls["EXE"]["console"] is True and calls["EXE"]["name"] == "chatapp", "not the console program chatapp"


@pytest.mark.parametrize("platform", ["linux", "win32"])
def test_spec_keeps_torch_out_and_brings_what_the_bundle_loads(tmp_path, bundle_runtime, platform):
    check_spec(read_spec(SPEC.read_text(), tmp_path, platform), bundle_runtime, platform)


@pytest.mark.parametrize(
    "original, broken, complaint",
    [
        ('"torch", "torchvision"', '"torchvision"', "not excluded: {'torch'}"),
        ('"transformers", ', "", "not excluded: {'transformers'}"),
        ('"tkinter",', '"tkinter", "jinja2",', "imports what the spec excludes: {'jinja2'}"),  # foreign chat templates
        ('"tkinter",', '"tkinter", "numpy",', "imports what the spec excludes: {'numpy'}"),
        ('    + collect_submodules("quant")\n', "", "not collected: {'quant.llama_worker'}"),  # started by name
        ('collect_submodules("textual.widgets")', "[]", "textual.widgets: not every submodule"),
        ("if src == str(GGUF)", "if False", "data files missing: {'chatapp/builtin/shakespeare-chat.gguf'}"),
        ('binaries.append((str(found[0]), "llama_cpp/lib"))', "pass", "OpenMP runtime is missing"),
        ("console=True", "console=False", "not the console program"),
    ],
)
def test_a_broken_spec_fails_the_check(tmp_path, bundle_runtime, original, broken, complaint):
    text = SPEC.read_text()
    assert original in text
    with pytest.raises(AssertionError, match=re.escape(complaint)):
        check_spec(read_spec(text.replace(original, broken), tmp_path, "win32"), bundle_runtime, "win32")


def test_build_names_and_pins():
    import chatapp

    assert build.version() == chatapp.__version__
    system, machine = build.platform_tag().split("-", 1)
    assert system in ("linux", "macos", "windows") and machine
    assert build.pinned("llama-cpp-python").startswith("llama-cpp-python==")
    lines = [line.split("#")[0].strip() for line in (PACKAGING / "requirements-bundle.txt").read_text().splitlines()]
    assert not [line for line in lines if "torch" in line.lower()]


# --- the built-in model without torch ---


@pytest.mark.parametrize(
    "names, torch, expected",
    [
        (["shakespeare-base", "shakespeare-base.gguf"], True, "shakespeare-base"),
        (["shakespeare-base", "shakespeare-base.gguf"], False, "shakespeare-base.gguf"),
        (
            ["shakespeare-base", "shakespeare-base-q4_0.gguf", "shakespeare-base-q8_0.gguf"],
            False,
            "shakespeare-base-q8_0.gguf",
        ),
        (["shakespeare-base"], False, "shakespeare-base"),  # no GGUF: the folder, and the backend says torch is missing
        (["shakespeare-base.gguf"], True, "shakespeare-base.gguf"),  # the bundle's layout, with torch installed
        (["tiny.gguf"], False, "tiny.gguf"),  # a bundle built with --model: its one GGUF
    ],
)
def test_default_model_is_the_builtin_gguf_without_torch(tmp_path, monkeypatch, names, torch, expected):
    from chatapp.models import registry
    from chatapp.models.resolve import resolve_model

    monkeypatch.setattr(registry, "BUILTIN_DIR", tmp_path / "builtin")
    monkeypatch.setattr(registry, "DEFAULT_MODEL", "shakespeare-base")
    monkeypatch.setattr(registry, "torch_available", lambda: torch)
    fake_builtin(tmp_path / "builtin", names)
    ref = resolve_model(None)
    assert ref.path.name == expected and ref.source == "built-in"
    assert resolve_model("") == ref


def test_default_model_missing_says_so(tmp_path, monkeypatch):
    from chatapp.models import registry
    from chatapp.models.resolve import resolve_model

    monkeypatch.setattr(registry, "BUILTIN_DIR", tmp_path / "empty")
    with pytest.raises(registry.ModelNotFound, match="built-in model"):
        resolve_model(None)


def test_torch_available_does_not_import_torch():
    code = (
        "import sys\nfrom chatapp.models.registry import torch_available\n"
        "from chatapp.models.resolve import resolve_model\n"
        "torch_available()\nassert 'torch' not in sys.modules\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr
