#!/usr/bin/env python3
"""The light install, as a user gets it: chatapp's wheel built from this working tree and installed,
without torch, into a fresh virtual environment (what `pip install chatapp` does).

    python packaging/light_install.py [--venv build/light-venv]     # prints the venv's folder

The wheel is built from a copy of the packages (setuptools would otherwise leave build/lib behind in the
tree, and package what a later build no longer has). The venv is made afresh when the wheel's
dependencies change (`make test-light` deletes it first); when only chatapp's files do, the new wheel
replaces the old one in it.
It fails when torch got in or `pip check` finds a dependency missing. Standard library and pip only
(pip fetches the build backend, setuptools, as for any install from source).
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WHEEL_SOURCES = ("pyproject.toml", "README.md", "chatapp", "model", "quant")
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")


def log(message: str) -> None:
    print(f"[light-install] {message}", file=sys.stderr, flush=True)


def run(cmd: list, **kwargs) -> None:
    log("$ " + " ".join(str(part) for part in cmd))
    subprocess.run([str(part) for part in cmd], check=True, stdout=sys.stderr, **kwargs)  # stdout: the venv alone


def build_wheel(out: Path) -> Path:
    """chatapp-VERSION-py3-none-any.whl from a copy of the working tree's packages, into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="chatapp-wheel-") as scratch:
        source = Path(scratch) / "src"
        source.mkdir()
        for name in WHEEL_SOURCES:
            if (ROOT / name).is_dir():
                shutil.copytree(ROOT / name, source / name, ignore=IGNORED)
            else:
                shutil.copy2(ROOT / name, source / name)
        for old in out.glob("chatapp-*.whl"):
            old.unlink()
        run(
            [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", out, source],
            cwd=scratch,
        )
    (wheel,) = out.glob("chatapp-*.whl")
    return wheel


def wheel_hashes(wheel: Path) -> tuple[str, str]:
    """(its dependencies, its whole content): the same for two wheels built from the same tree (a zip's
    timestamps differ; METADATA lists the dependencies, RECORD every file's SHA-256)."""
    with zipfile.ZipFile(wheel) as archive:

        def digest(part: str) -> str:
            name = next(name for name in archive.namelist() if name.endswith(f".dist-info/{part}"))
            return hashlib.sha256(archive.read(name)).hexdigest()

        return digest("METADATA"), digest("RECORD")


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


def light_install(venv: Path, python: str = sys.executable) -> Path:
    """A venv holding chatapp's current wheel and its torch-free dependencies; its folder. Made afresh
    when the dependencies changed; when only chatapp's files did, the wheel alone is installed again."""
    wheel = build_wheel(venv.parent / f"{venv.name}-wheel")
    stamp = venv / ".chatapp-wheel-hashes"
    dependencies, content = wheel_hashes(wheel)
    before = stamp.read_text(encoding="utf-8").split() if venv_python(venv).exists() and stamp.exists() else []
    py = venv_python(venv)
    if before == [dependencies, content]:
        log(f"reusing {venv} (the wheel is unchanged)")
        return venv
    if before[:1] == [dependencies]:
        log(f"reusing {venv} with the new wheel (its dependencies are unchanged)")
        run([py, "-m", "pip", "install", "--quiet", "--no-deps", "--force-reinstall", wheel])
    else:
        if venv.exists():
            shutil.rmtree(venv)
        run([python, "-m", "venv", venv])
        run([py, "-m", "pip", "install", "--quiet", wheel])
    run([py, "-m", "pip", "check"])
    has_torch = "import importlib.util, sys; sys.exit(importlib.util.find_spec('torch') is not None)"
    if subprocess.run([str(py), "-c", has_torch]).returncode != 0:
        raise SystemExit(f"{venv}: `pip install chatapp` installed torch; it must be the [torch] extra's alone")
    stamp.write_text(f"{dependencies} {content}\n", encoding="utf-8")
    return venv


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--venv", type=Path, default=ROOT / "build" / "light-venv")
    parser.add_argument("--python", default=sys.executable, help="the Python that makes the venv (default: this one)")
    args = parser.parse_args(argv)
    print(light_install(args.venv.resolve(), args.python))
    return 0


if __name__ == "__main__":
    sys.exit(main())
