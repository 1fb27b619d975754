"""Where an export may write: one rule for every format (GGUF, Ollama, Hugging Face).

Never the model folder it reads, nor anything inside it; never over a device, a
pipe or a socket, forced or not; and never over a file or a folder that is not an
earlier chatapp export, unless forced. A GGUF file
chatapp wrote carries CHATAPP_KEY; a folder chatapp wrote says so in its own way
(see `earlier_export`).

Exports write hidden temporaries beside their target (".NAME.PID.*.tmp"); a
new export removes those of runs whose process is gone, or that are older
than STALE_SECONDS.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from quant.gguf_header import read_gguf_metadata
from quant.gguf_layout import CHATAPP_KEY, ExportError

STALE_SECONDS = 3600


def check_target(source: str | Path, out: str | Path, force: bool, earlier_export) -> None:
    """Refuse `out` if it is or lies in a folder the export reads (the source, and an adapters
    folder's base), or holds something that earlier_export(out) says chatapp did not write (unless force)."""
    target = Path(out).expanduser().resolve()
    for folder in folders_read(Path(source).resolve()):
        if target == folder or folder in target.parents:
            raise ExportError(
                f"{out}: is inside the model folder it is made from ({folder}); write the export elsewhere"
            )
    if target.exists() and not (target.is_file() or target.is_dir()):
        raise ExportError(f"{out}: is a device or other special file; an export writes a regular file or a folder")
    if target.exists() and not force and not earlier_export(target):
        what = "folder" if target.is_dir() else "file"
        raise ExportError(f"{out}: a {what} that is not an earlier chatapp export; --force replaces it")


def folders_read(source: Path) -> list[Path]:
    """The model folder an export reads and, for an adapters folder, the base model it names."""
    from model.network.model_folder import ADAPTERS_KEY, find_base_model, read_config

    folders = [source]
    try:
        adapters = read_config(source).get(ADAPTERS_KEY)
        if isinstance(adapters, dict) and "base" in adapters:
            folders.append(find_base_model(source, str(adapters["base"])).resolve())
    except Exception:  # noqa: BLE001 - an unreadable folder: the export itself says why, in its words
        pass
    return folders


def is_chatapp_gguf(path: Path) -> bool:
    """A GGUF file chatapp exported (it has CHATAPP_KEY); False for anything else, readable or not."""
    if not path.is_file():
        return False
    try:
        return CHATAPP_KEY in read_gguf_metadata(path, (CHATAPP_KEY,))  # the bounded walk: any file may sit there
    except Exception:  # a damaged or foreign file: not ours
        return False


def temporary_prefix(out: Path) -> str:
    """What an export's temporaries beside `out` start with: the name and this process's id."""
    return f".{out.name}.{os.getpid()}."


def sweep_stale_temporaries(out: Path) -> list[Path]:
    """Remove the temporaries of earlier exports to `out` whose process is gone or that are stale."""
    removed: list[Path] = []
    try:
        candidates = list(out.parent.glob(f".{out.name}.*.tmp"))
    except OSError:
        return removed
    for path in candidates:
        pid = path.name[len(out.name) + 2 :].split(".")[0]  # ".NAME." PID "." random [".f32"] ".tmp"
        if not pid.isdigit() or not _stale(path, int(pid)):
            continue
        try:
            if path.is_dir():  # an HF export's staging folder
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(path)
        except OSError:
            pass
    return removed


def _stale(path: Path, pid: int) -> bool:
    try:
        old = time.time() - path.stat().st_mtime > STALE_SECONDS
    except OSError:
        return False
    return old or not _running(pid)


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # another user's process, or cannot tell: keep its files
    return True
