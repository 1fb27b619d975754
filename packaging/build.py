#!/usr/bin/env python3
"""Builds chatapp's desktop bundle: one command, on Linux, macOS or Windows.

    python packaging/build.py            # from the repository root, any Python >= 3.10

1. A clean virtual environment without torch (build/bundle-venv) with the
   pinned packages of packaging/requirements-bundle.txt. llama-cpp-python has
   no wheels on PyPI: it is compiled once, portable (CMAKE_ARGS
   "-DGGML_NATIVE=off -DLLAVA_BUILD=off"), into build/wheels, and reused from
   there (and from pip's wheel cache).
2. The built-in model as GGUF: a .gguf in chatapp/builtin if there is one for
   the default model, else the built-in model folder exported to Q8_0, in that
   venv (the export needs no torch). --model ships another folder or GGUF.
3. PyInstaller (packaging/chatapp.spec): a one-folder console program in
   dist/chatapp-VERSION-PLATFORM/chatapp/.
4. Around it: on Linux install.sh, uninstall.sh, the desktop entry and the
   icons; on macOS chatapp.app, whose launcher opens Terminal; on Windows the
   Inno Setup installer when ISCC is installed.
5. Checks: the folder's size budget, torch absent, `chatapp --version` runs.
6. The archive (.tar.gz, on Windows .zip) and its SHA-256 next to it.

Uses only the standard library; the heavy lifting runs in the bundle venv.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import plistlib
import re
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGING = ROOT / "packaging"
REQUIREMENTS = PACKAGING / "requirements-bundle.txt"
CMAKE_ARGS = "-DGGML_NATIVE=off -DLLAVA_BUILD=off"
MAX_MB = 150
LINUX_ICON_SIZES = (16, 24, 32, 48, 64, 128, 256, 512)
APP_ID = "io.github.chatapp"


def log(message: str) -> None:
    print(f"[build] {message}", flush=True)


def run(cmd: list, **kwargs) -> subprocess.CompletedProcess:
    log("$ " + " ".join(str(c) for c in cmd))
    return subprocess.run([str(c) for c in cmd], check=True, **kwargs)


def version() -> str:
    text = (ROOT / "chatapp" / "__init__.py").read_text(encoding="utf-8")
    return re.search(r'^__version__\s*=\s*"([^"]+)"', text, re.M).group(1)


def platform_tag() -> str:
    system = {"linux": "linux", "darwin": "macos", "win32": "windows"}.get(sys.platform, sys.platform)
    machine = platform.machine().lower()
    machine = {"amd64": "x86_64", "x64": "x86_64", "aarch64": "arm64"}.get(machine, machine)
    return f"{system}-{machine}"


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


def pinned(requirement_name: str) -> str:
    for line in REQUIREMENTS.read_text(encoding="utf-8").splitlines():
        line = line.split("#")[0].strip()
        if re.match(rf"{re.escape(requirement_name)}\s*==", line, re.I):
            return line
    raise SystemExit(f"{REQUIREMENTS}: no pinned {requirement_name}")


# --- 1. the torch-free virtual environment ---


def make_venv(venv: Path, work: Path, python: str) -> Path:
    py = venv_python(venv)
    env = {**os.environ, "CMAKE_ARGS": os.environ.get("CMAKE_ARGS", CMAKE_ARGS), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    base = subprocess.run(
        [python, "-c", "import sys; print(sys.base_prefix, sys.version)"], check=True, capture_output=True, text=True
    ).stdout.strip()  # a venv's python and its base are the same
    stamp_text = json.dumps([REQUIREMENTS.read_text(encoding="utf-8"), env["CMAKE_ARGS"], base])
    stamp = venv / ".chatapp-bundle-stamp"
    if py.exists() and stamp.exists() and stamp.read_text(encoding="utf-8") == stamp_text:
        log(f"reusing {venv}")
        return py
    if venv.exists():
        shutil.rmtree(venv)
    run([python, "-m", "venv", venv])
    wheels = work / "wheels"
    llama = pinned("llama-cpp-python")
    llama_version = llama.split("==")[1].strip()
    if not list(wheels.glob(f"llama_cpp_python-{llama_version}-*.whl")):
        log(
            f"building the {llama} wheel (CMAKE_ARGS={env['CMAKE_ARGS']}); "
            "without a cached wheel this compiles llama.cpp: 10-15 min on 2 cores"
        )
        run([py, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", wheels, llama], env=env)
    run([py, "-m", "pip", "install", "--quiet", "--find-links", wheels, "-r", REQUIREMENTS], env=env)
    check_no_torch(py)
    stamp.write_text(stamp_text, encoding="utf-8")
    return py


def check_no_torch(py: Path) -> None:
    code = "import importlib.util, sys; sys.exit(importlib.util.find_spec('torch') is not None)"
    if subprocess.run([str(py), "-c", code]).returncode != 0:
        raise SystemExit(f"{py}: torch is installed in the bundle venv; the bundle must not have it (delete the venv)")


# --- 2. the built-in model as GGUF ---


def model_gguf(py: Path, work: Path, model: str | None, name: str | None) -> tuple[Path, str]:
    """(the GGUF to ship, the model's name). Exports a model folder to Q8_0 (cached in build/gguf)."""
    code = (
        "import json, sys\n"
        "from chatapp.models.registry import DEFAULT_MODEL, default_model\n"
        "from chatapp.models.resolve import resolve_model\n"
        "ref = resolve_model(sys.argv[1]) if len(sys.argv) > 1 else default_model()\n"
        "print(json.dumps([ref.name, str(ref.path), ref.kind, DEFAULT_MODEL]))"
    )
    args = [str(py), "-c", code] + ([str(Path(model).resolve())] if model else [])
    found = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
    if found.returncode != 0:
        raise SystemExit(
            f"no model to ship: {found.stderr.strip().splitlines()[-1] if found.stderr.strip() else found.returncode}"
        )
    out = found.stdout
    ref_name, path, kind, default = json.loads(out)
    path = Path(path)
    if kind == "gguf":
        shipped = name or (default if not model and ref_name.startswith(default + "-") else ref_name)
        folder = ROOT / "chatapp" / "builtin" / default
        if not model and (folder / "model.safetensors").exists():
            path = fresh_if_stale(py, work, path, folder)
        log(f"shipping {path} as {shipped}.gguf")
        return path, shipped
    shipped = name or ref_name
    return exported_q8_0(py, work, path, shipped), shipped


def folder_digest(folder: Path) -> str:
    """SHA-256 over a model folder's files, names and bytes: its content, whatever the files' mtimes
    (a fresh clone's are the checkout's)."""
    digest = hashlib.sha256()
    for file in sorted(path for path in folder.iterdir() if path.is_file()):
        digest.update(file.name.encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()


def exported_q8_0(py: Path, work: Path, folder: Path, name: str) -> Path:
    """build/gguf/NAME-q8_0.gguf exported from the folder (torch-free), again only when its content changed."""
    target = work / "gguf" / f"{name}-q8_0.gguf"
    stamp = target.with_name(target.name + ".source-sha256")
    digest = folder_digest(folder)
    if target.exists() and stamp.exists() and stamp.read_text(encoding="utf-8") == digest:
        log(f"reusing {target}")
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    run([py, "-m", "chatapp", "export", folder, "--type", "q8_0", "-o", target, "--force"], cwd=ROOT)
    stamp.write_text(digest, encoding="utf-8")
    return target


# The tensors of two GGUF files, compared; and the metadata keys the second has and the first lacks.
COMPARE_GGUF = """
import json, sys
from gguf import GGUFReader

def read(path):
    reader = GGUFReader(path)
    return {t.name: (int(t.tensor_type), t.data.tobytes()) for t in reader.tensors}, set(reader.fields)

(shipped, shipped_keys), (fresh, fresh_keys) = read(sys.argv[1]), read(sys.argv[2])
print(json.dumps({"same_tensors": shipped == fresh, "missing_keys": sorted(fresh_keys - shipped_keys)}))
"""


def fresh_if_stale(py: Path, work: Path, shipped: Path, folder: Path) -> Path:
    """The checked-in GGUF, or where it is not what exporting the model folder gives now (other weights,
    or metadata keys a fresh export writes), a fresh export, with a warning."""
    fresh = exported_q8_0(py, work, folder, folder.name)
    found = subprocess.run([str(py), "-c", COMPARE_GGUF, str(shipped), str(fresh)], capture_output=True, text=True)
    if found.returncode != 0:
        raise SystemExit(f"comparing {shipped.name} with a fresh export failed: {found.stderr.strip()[-2000:]}")
    compared = json.loads(found.stdout)
    if compared["same_tensors"] and not compared["missing_keys"]:
        return shipped
    why = "holds other weights" if not compared["same_tensors"] else f"lacks {', '.join(compared['missing_keys'])}"
    log(
        f"warning: {shipped.name} {why}, unlike a fresh export of {folder.name}: shipping {fresh} instead; "
        f"re-export it: chatapp export {folder.name} --type q8_0 -o {shipped} --force"
    )
    return fresh


# --- 3. PyInstaller ---


def pyinstaller(py: Path, work: Path, distpath: Path, gguf: Path, name: str) -> None:
    env = {
        **os.environ,
        "CHATAPP_BUNDLE_GGUF": str(gguf),
        "CHATAPP_BUNDLE_NAME": name,
        "CHATAPP_VERSION": version(),
        "CHATAPP_APP_ID": APP_ID,
    }
    run(
        [
            py,
            "-m",
            "PyInstaller",
            "--noconfirm",
            "--log-level",
            "WARN",
            "--distpath",
            distpath,
            "--workpath",
            work / "pyinstaller",
            PACKAGING / "chatapp.spec",
        ],
        env=env,
        cwd=ROOT,
    )


# --- 4. around the program ---


def stage_linux(bundle: Path, stage: Path) -> None:
    """Next to the program folder: install.sh, uninstall.sh, the desktop entry, the icons, a README."""
    linux = PACKAGING / "linux"
    for script in ("install.sh", "uninstall.sh"):
        shutil.copy2(linux / script, stage / script)
        (stage / script).chmod(0o755)
    shutil.copy2(linux / "chatapp.desktop", stage / "chatapp.desktop")
    icons = stage / "icons"
    icons.mkdir(exist_ok=True)
    shutil.copy2(PACKAGING / "icons" / "chatapp.svg", icons / "chatapp.svg")
    for size in LINUX_ICON_SIZES:
        shutil.copy2(PACKAGING / "icons" / f"chatapp-{size}.png", icons / f"chatapp-{size}.png")
    shutil.copy2(linux / "README.txt", stage / "README.txt")


GLIBC_VERSION = re.compile(rb"\bGLIBC_(\d+)\.(\d+)")


def glibc_needed(folder: Path) -> str | None:
    """The oldest glibc the bundle runs on: the newest GLIBC_x.y symbol version that any of its ELF files
    asks for (`objdump -T`; the bundle carries no libc of its own). None without objdump."""
    objdump = shutil.which("objdump")
    if objdump is None:
        log("objdump (binutils) is missing: the oldest glibc the bundle needs is not measured")
        return None
    newest = (0, 0)
    for path in sorted(folder.rglob("*")):
        if path.is_symlink() or not path.is_file():
            continue
        with open(path, "rb") as f:
            if f.read(4) != b"\x7fELF":
                continue
        symbols = subprocess.run([objdump, "-T", str(path)], capture_output=True).stdout
        for match in GLIBC_VERSION.finditer(symbols):
            newest = max(newest, (int(match[1]), int(match[2])))
    return f"{newest[0]}.{newest[1]}" if newest > (0, 0) else None


LINUX_LAUNCHER = """#!/bin/sh
# chatapp's launcher: the program is chatapp-bin, next to this script. It needs glibc {glibc} or newer;
# on an older system this says so in one line instead of the loader's error. The PATH may be empty:
# readlink and getconf are called by their full paths, and skipped where missing.
self="$0"
for tool in /usr/bin/readlink /bin/readlink; do
    if [ -x "$tool" ]; then self="$("$tool" -f "$0")"; break; fi
done
need="{glibc}"
have=""
for tool in /usr/bin/getconf /bin/getconf; do
    if [ -x "$tool" ]; then have="$("$tool" GNU_LIBC_VERSION 2>/dev/null)"; break; fi
done
have="${{have#glibc }}"
have_major="${{have%%.*}}"; have_minor="${{have#*.}}"; have_minor="${{have_minor%%.*}}"
need_major="${{need%%.*}}"; need_minor="${{need#*.}}"
case "$have_major.$have_minor.$need_major.$need_minor" in
    *[!0-9.]*|*..*|.*) ;;  # not measured, or not a glibc: let the program try
    *)
        if [ "$have_major" -lt "$need_major" ] ||
            {{ [ "$have_major" -eq "$need_major" ] && [ "$have_minor" -lt "$need_minor" ]; }}; then
            echo "chatapp: this system has glibc $have; this build needs $need or newer" \
                "(pip install chatapp builds chatapp for this system instead)" >&2
            exit 1
        fi ;;
esac
exec "${{self%/*}}/chatapp-bin" "$@"
"""


def add_linux_launcher(bundle: Path, glibc: str | None) -> None:
    """The program becomes chatapp-bin, and chatapp a launcher that first checks the system's glibc
    (PyInstaller's program finds its _internal folder by its own location, whatever its name)."""
    program = bundle / "chatapp"
    program.rename(bundle / "chatapp-bin")
    program.write_text(LINUX_LAUNCHER.format(glibc=glibc or ""), encoding="utf-8")
    program.chmod(0o755)


def macos_launcher(app: Path) -> None:
    """Turn PyInstaller's chatapp.app into one that opens Terminal on the bundled program.

    A console program started from Finder has no terminal. The app's executable
    becomes a small script that has Terminal open chatapp.command, which runs
    the real program (Contents/MacOS/chatapp) and closes when it ends.
    """
    contents = app / "Contents"
    macos = contents / "MacOS"
    launcher = macos / "chatapp-launcher"
    launcher.write_text(
        "#!/bin/sh\n"
        "# chatapp is a terminal program: open Terminal on it (Finder gives a .app no terminal).\n"
        'here="$(cd "$(dirname "$0")" && pwd)"\n'
        'exec /usr/bin/open -n -a Terminal "$here/chatapp.command"\n',
        encoding="utf-8",
    )
    command = macos / "chatapp.command"
    command.write_text(
        "#!/bin/sh\n"
        'here="$(cd "$(dirname "$0")" && pwd)"\n'
        "clear\n"
        '"$here/chatapp" "$@"\n'
        "status=$?\n"
        '[ $status -eq 0 ] || { echo; echo "chatapp exited with status $status; press Return to close"; read _; }\n'
        "exit $status\n",
        encoding="utf-8",
    )
    for script in (launcher, command):
        script.chmod(0o755)
    info_path = contents / "Info.plist"
    info = plistlib.loads(info_path.read_bytes())
    info.update(
        {
            "CFBundleExecutable": "chatapp-launcher",
            "CFBundleDisplayName": "chatapp",
            "CFBundleShortVersionString": version(),
            "CFBundleVersion": version(),
            "LSApplicationCategoryType": "public.app-category.productivity",
            "NSHighResolutionCapable": True,
        }
    )
    info_path.write_bytes(plistlib.dumps(info))


def finish_macos(stage: Path) -> Path:
    app = stage / "chatapp.app"
    shutil.rmtree(stage / "chatapp")  # the same program, already inside chatapp.app
    macos_launcher(app)
    if shutil.which("codesign"):  # the edited app needs a fresh (ad-hoc) signature on Apple Silicon
        run(["codesign", "--force", "--deep", "--sign", "-", app])
    shutil.copy2(PACKAGING / "macos" / "README.txt", stage / "README.txt")
    return app / "Contents" / "MacOS" / "chatapp"


def inno_setup(stage: Path, dist: Path, stem: str) -> Path | None:
    iscc = shutil.which("iscc") or shutil.which("ISCC")
    default = Path(os.environ.get("ProgramFiles(x86)", r"C:\Program Files (x86)")) / "Inno Setup 6" / "ISCC.exe"
    if not iscc and default.is_file():
        iscc = str(default)
    if not iscc:
        log("Inno Setup (ISCC.exe) not found: skipping the installer; the .zip is built")
        return None
    run(
        [
            iscc,
            f"/DAppVersion={version()}",
            f"/DSourceDir={stage / 'chatapp'}",
            f"/DOutputDir={dist}",
            f"/DOutputBase={stem}-setup",
            PACKAGING / "windows" / "chatapp.iss",
        ]
    )
    return dist / f"{stem}-setup.exe"


# --- 5. checks ---


def folder_size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and not f.is_symlink())


def smoke_test(program: Path) -> float:
    start = time.perf_counter()
    result = subprocess.run(
        [str(program), "--version"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=program.anchor,
        env={**os.environ, "PATH": ""},
    )
    seconds = time.perf_counter() - start
    if result.returncode != 0 or version() not in result.stdout:
        raise SystemExit(f"{program} --version failed ({result.returncode}): {result.stdout}{result.stderr}")
    return seconds


# --- 6. the archive ---


def archive(stage: Path, dist: Path) -> Path:
    if sys.platform == "win32":
        target = dist / f"{stage.name}.zip"
        with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as z:
            for path in sorted(stage.rglob("*")):
                z.write(path, path.relative_to(dist))
    else:
        target = dist / f"{stage.name}.tar.gz"
        with tarfile.open(target, "w:gz", compresslevel=6) as tar:
            tar.add(stage, arcname=stage.name)
    return target


def write_sha256(path: Path) -> Path:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    out = path.with_name(path.name + ".sha256")
    out.write_text(f"{digest.hexdigest()}  {path.name}\n", encoding="utf-8")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", default=None, help="a model folder or GGUF file to ship (default: the built-in model)"
    )
    parser.add_argument("--name", default=None, help="the shipped model's name (default: the model's)")
    parser.add_argument(
        "--python", default=sys.executable, help="the Python that makes the bundle venv (default: this one)"
    )
    parser.add_argument("--venv", type=Path, default=ROOT / "build" / "bundle-venv")
    parser.add_argument("--work", type=Path, default=ROOT / "build", help="intermediate files (default build/)")
    parser.add_argument("--dist", type=Path, default=ROOT / "dist", help="the output folder (default dist/)")
    parser.add_argument("--no-archive", action="store_true", help="skip the archive and its checksum")
    parser.add_argument("--max-mb", type=float, default=MAX_MB, help=f"fail above this folder size (default {MAX_MB})")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    work, dist = args.work.resolve(), args.dist.resolve()
    py = make_venv(args.venv.resolve(), work, args.python)
    gguf, name = model_gguf(py, work, args.model, args.name)

    stem = f"chatapp-{version()}-{platform_tag()}"
    stage = dist / stem
    if stage.exists():
        shutil.rmtree(stage)
    pyinstaller(py, work, stage, gguf, name)
    if sys.platform == "darwin":
        program, folder = finish_macos(stage), stage / "chatapp.app"
    else:
        folder = stage / "chatapp"
        program = folder / ("chatapp.exe" if sys.platform == "win32" else "chatapp")
        if sys.platform == "win32":
            shutil.copy2(PACKAGING / "windows" / "README.txt", stage / "README.txt")
        else:
            glibc = glibc_needed(folder)
            log(f"the oldest glibc it runs on: {glibc or 'not measured'}")
            add_linux_launcher(folder, glibc)
            stage_linux(folder, stage)

    size_mb = folder_size(folder) / 1e6
    if list(folder.rglob("torch")):
        raise SystemExit(f"{folder}: torch got into the bundle")
    seconds = smoke_test(program)
    log(
        f"{folder}: {size_mb:.1f} MB; `chatapp --version` in {seconds:.2f} s; "
        f"model {name} ({gguf.stat().st_size / 1e6:.1f} MB)"
    )
    if size_mb > args.max_mb:
        raise SystemExit(f"{folder} is {size_mb:.1f} MB, over the {args.max_mb:g} MB budget")

    outputs = [folder]
    if sys.platform == "win32":
        installer = inno_setup(stage, dist, stem)
        if installer:
            outputs += [installer, write_sha256(installer)]
    if not args.no_archive:
        packed = archive(stage, dist)
        outputs += [packed, write_sha256(packed)]
        log(f"{packed.name}: {packed.stat().st_size / 1e6:.1f} MB")
    log(f"done in {time.perf_counter() - started:.0f} s:\n  " + "\n  ".join(str(p) for p in outputs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
