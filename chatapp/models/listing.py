"""How models are shown: a label that tells two files apart, and the table
(or JSON records) that `chatapp models` prints.

A GGUF file's label comes from its metadata header, read without the gguf
package's full reader: that one builds an object for every vocabulary entry and
tensor, which takes far longer than the listing should.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path

from chatapp.models.pulled import pulled_paths
from chatapp.models.registry import ModelRef, split_parts
from chatapp.paths import user_models_dir
from chatapp.serving.endpoint import EndpointModel
from model.network.model_folder import read_config
from quant.gguf_header import read_gguf_metadata

LABEL_KEYS = ("general.name", "general.file_type")
MAX_LABEL_WIDTH = 60  # in the `chatapp models` table
# A quantization type in a file name, for files whose header does not say (general.file_type is optional).
QUANT_IN_NAME = re.compile(r"(?<![A-Za-z0-9])(I?Q\d(?:_[A-Z0-9]+)+|BF16|F16|F32)(?![A-Za-z0-9])", re.IGNORECASE)


def quantization_name(file_type: int | None, file_name: str) -> str | None:
    """Q4_K_M for LlamaFileType.MOSTLY_Q4_K_M, F32 for ALL_F32; else a type named in the file name."""
    if isinstance(file_type, int):
        from quant.gguf_check import file_type_name  # gguf and numpy come with it: only once a label needs it

        return file_type_name(file_type) or f"file type {file_type}"  # None: a type newer than gguf knows
    match = QUANT_IN_NAME.search(Path(file_name).stem)
    return match.group(1).upper() if match else None


def human_size(size_bytes: int) -> str:
    if size_bytes >= 1e9:
        return f"{size_bytes / 1e9:.1f} GB"
    if size_bytes >= 10e6:
        return f"{size_bytes / 1e6:.0f} MB"
    return f"{size_bytes / 1e6:.1f} MB"


def gguf_label(path: Path) -> str:
    """Like "Qwen2.5 0.5B Instruct · Q4_K_M · 398 MB", or "unreadable (why)" for a damaged file. Never raises."""
    try:
        stat = path.stat()
    except OSError as error:
        return f"unreadable ({error.strerror or error})"
    return _gguf_label(path, stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=1024)  # keyed by (path, mtime, size): a file rewritten in place gets a new label
def _gguf_label(path: Path, mtime_ns: int, size: int) -> str:
    parts = split_parts(path)
    missing = [part.name for part in parts if not part.is_file()]
    if missing:
        return f"unreadable ({missing[0]} is missing)"
    try:
        metadata = read_gguf_metadata(path, LABEL_KEYS)
        total_size = sum(part.stat().st_size for part in parts)
    except OSError as error:
        return f"unreadable ({error.strerror or error})"
    except ValueError as error:  # GGUFHeaderError
        return f"unreadable ({error})"
    name = str(metadata.get("general.name") or "").strip() or path.stem
    quantization = quantization_name(metadata.get("general.file_type"), path.name)
    return " · ".join(part for part in (name, quantization, human_size(total_size)) if part)


def describe(ref: ModelRef) -> str:
    """A model folder's shape ("GPT 6x256, context 256"); model_label also labels GGUF files."""
    if ref.kind == "folder":
        try:
            arch = read_config(ref.path)["architecture"]
            return f"GPT {arch['n_layer']}x{arch['n_embd']}, context {arch['context_length']}"
        except ValueError as error:  # the listing shows the folder's path already
            return f"unreadable ({str(error).replace(str(ref.path) + os.sep, '')})"
        except (KeyError, TypeError):
            return "unreadable (config.json: incomplete architecture)"
        except OSError as error:
            return f"unreadable ({error.strerror or error})"
    return "GGUF"


def model_label(ref: ModelRef | EndpointModel) -> str:
    """What a model is, in one line: a GGUF file's name, type and size, a model folder's shape."""
    if isinstance(ref, EndpointModel):
        return "on an OpenAI-compatible server"
    return gguf_label(ref.path) if ref.kind == "gguf" else describe(ref)


def model_records(refs: list[ModelRef], default_path: Path | None, pulled: set[Path] | None = None) -> list[dict]:
    """`chatapp models --json`: one dict per model; "pulled": fetched by `chatapp pull` (by default as its record
    says)."""
    pulled = pulled_paths() if pulled is None else pulled
    return [
        {
            "name": ref.name,
            "path": str(ref.path),
            "kind": ref.kind,
            "source": ref.source,
            "size_bytes": ref.size_bytes,
            "label": model_label(ref),
            "default": ref.path == default_path,
            "pulled": ref.path in pulled,
        }
        for ref in refs
    ]


def shortened(label: str, width: int = MAX_LABEL_WIDTH) -> str:
    """One long error message would otherwise widen the label column of every line (--json has it whole)."""
    return label if len(label) <= width else label[: width - 1] + "…"


def model_lines(refs: list[ModelRef], default_path: Path | None) -> list[str]:
    """`chatapp models`: an aligned table, one line per model, then where the user's models go."""
    records = model_records(refs, default_path)
    rows = [
        [r["name"], r["source"], r["kind"], f"{r['size_bytes'] / 1e6:.1f} MB", shortened(r["label"]), r["path"]]
        for r in records
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))] if rows else []
    size_column = 3
    lines = []
    for record, row in zip(records, rows):
        cells = [cell.rjust(widths[i]) if i == size_column else cell.ljust(widths[i]) for i, cell in enumerate(row)]
        mark = "* " if record["default"] else "+ " if record["pulled"] else "  "
        lines.append(mark + "  ".join(cells).rstrip())
    if not records:
        lines.append("no models found")
    if any(record["default"] for record in records):
        lines.append("* the default model")
    if any(record["pulled"] for record in records):
        lines.append("+ pulled with `chatapp pull` (`chatapp rm NAME` removes it)")
    if any(record["source"] == "opened" for record in records):
        lines.append("opened: a GGUF file once opened by its path, listed while it is there")
    lines.append(f"your models folder: {user_models_dir()} (put model folders or .gguf files there)")
    return lines
