"""The child process of tests/system/test_fuzz_loaders.py: loads many (damaged) models in a loop.

    python tests/helpers/fuzz_child.py MANIFEST.json

MANIFEST is a list of {"case": i, "kind": "gguf" | "folder", "path": ...}. The child
limits its own address space (RLIMIT_AS, FUZZ_MEMORY_LIMIT_BYTES, 3 GB by default),
then loads each case with the real loaders and prints one JSON line per case:

    {"case": i, "outcome": "ok" | "error" | "bug", "message": "..."}

"error" is what chatapp's CLI shows as one line (ValueError, OSError, RuntimeError,
ImportError: chatapp/cli.py main); anything else ("bug") is a loader bug, with the
last lines of its traceback. A {"case": i, "start": true} line comes first for each
case, so the parent can name the case that hung or killed the process.

GGUF: quant.gguf_check.check_gguf, then (for a file that passes) a load through
quant.llama_worker.WorkerBackend, as the app does it (llama.cpp in its own process:
an abort there is a one-line EngineCrashed), and two generated tokens. Folders:
model.network.model_folder.load_model, and a forward pass over a few tokens.

Only the standard library at the top: the llama.cpp worker is started with "spawn",
which imports this file again in the worker.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import sys
import traceback
from pathlib import Path

USER_ERRORS = (ValueError, OSError, RuntimeError, ImportError)  # chatapp/cli.py main: one line each


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def load_gguf(path: Path, log_dir: Path) -> str:
    from model.inference.sampling import SamplingParams
    from quant.gguf_check import check_gguf
    from quant.llama_worker import WorkerBackend

    info = check_gguf(path)
    backend = WorkerBackend.load(path, log_dir=log_dir, n_threads=1)
    try:
        events = list(backend.complete("hi", SamplingParams(max_tokens=2, seed=1)))
    finally:
        backend.close()
    return f"{info.architecture}, {len(events)} events"


def load_folder(path: Path) -> str:
    import torch

    from model.network.model_folder import load_model

    model, tokenizer, _config = load_model(path)
    ids = tokenizer.encode("hi there")[: model.config.context_length] or [0]
    with torch.no_grad():
        logits = model(torch.tensor([ids]))
    logits = logits[0] if isinstance(logits, tuple) else logits
    return f"{tokenizer.vocab_size} tokens, logits {tuple(logits.shape)}"


def digest(kind: str, path: Path) -> str:
    """The case's content: a mutant identical to one already run gives the same outcome."""
    h = hashlib.sha256(kind.encode())
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    for file in files:
        h.update(file.name.encode() + b"\0" + file.read_bytes() + b"\0")
    return h.hexdigest()


def emit(record: dict) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def main() -> int:
    limit = int(os.environ.get("FUZZ_MEMORY_LIMIT_BYTES", 3 << 30))
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    cases = json.loads(Path(sys.argv[1]).read_text())
    log_dir = Path(sys.argv[1]).parent / "logs"
    seen: dict[str, dict] = {}
    for case in cases:
        i, kind, path = case["case"], case["kind"], Path(case["path"])
        emit({"case": i, "start": True})
        key = digest(kind, path)
        if key in seen:
            emit({**seen[key], "case": i, "same_as": seen[key]["case"]})
            continue
        try:
            message = load_gguf(path, log_dir) if kind == "gguf" else load_folder(path)
            record = {"case": i, "outcome": "ok", "message": message}
        except USER_ERRORS as error:
            record = {"case": i, "outcome": "error", "message": first_line(error), "type": type(error).__name__}
        except Exception as error:  # noqa: BLE001 - a bug: the parent reports it with the case
            tail = "".join(traceback.format_exception(error)[-4:])
            record = {
                "case": i,
                "outcome": "bug",
                "message": f"{type(error).__name__}: {first_line(error)}",
                "traceback": tail,
            }
        seen[key] = record
        emit(record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
