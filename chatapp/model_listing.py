"""How models are shown: a label that tells two files apart, and the table
(or JSON records) that `chatapp models` prints.

A GGUF file's label comes from its metadata header, read without the gguf
package's full reader: that one builds an object for every vocabulary entry and
tensor, which takes far longer than the listing should.
"""

from __future__ import annotations

import mmap
import re
import struct
from functools import lru_cache
from pathlib import Path

from chatapp.model_registry import ModelRef, describe, split_parts
from chatapp.paths import user_models_dir

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
LABEL_KEYS = ("general.name", "general.file_type")
MAX_LABEL_WIDTH = 60  # in the `chatapp models` table
GGUF_STRING, GGUF_ARRAY = 8, 9
GGUF_SCALAR_FORMATS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
# A quantization type in a file name, for files whose header does not say (general.file_type is optional).
QUANT_IN_NAME = re.compile(r"(?<![A-Za-z0-9])(I?Q\d(?:_[A-Z0-9]+)+|BF16|F16|F32)(?![A-Za-z0-9])", re.IGNORECASE)


class GGUFHeaderError(ValueError):
    """A GGUF header that cannot be read; the message says why, in a few words."""


class HeaderCursor:
    """Reads GGUF header values one after another from a buffer."""

    def __init__(self, buffer, byte_order: str, offset: int):
        self.buffer, self.byte_order, self.offset = buffer, byte_order, offset

    def scalar(self, fmt: str):
        (value,) = struct.unpack_from(self.byte_order + fmt, self.buffer, self.offset)
        self.offset += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        length = self.scalar("Q")
        if self.offset + length > len(self.buffer):
            raise GGUFHeaderError("truncated header")
        text = bytes(self.buffer[self.offset:self.offset + length]).decode("utf-8", errors="replace")
        self.offset += length
        return text

    def value(self, value_type: int):
        if value_type == GGUF_STRING:
            return self.string()
        if value_type in GGUF_SCALAR_FORMATS:
            return self.scalar(GGUF_SCALAR_FORMATS[value_type])
        raise GGUFHeaderError(f"unknown value type {value_type}")

    def skip(self, value_type: int) -> None:
        if value_type != GGUF_ARRAY:
            self.value(value_type)
            return
        item_type, count = self.scalar("I"), self.scalar("Q")
        self.check_count(count, 8 if item_type in (GGUF_STRING, GGUF_ARRAY) else 1)
        if item_type in GGUF_SCALAR_FORMATS:
            self.offset += count * struct.calcsize(GGUF_SCALAR_FORMATS[item_type])
        elif item_type == GGUF_STRING:
            self.skip_strings(count)
        else:
            for _ in range(count):
                self.skip(item_type)
        if self.offset > len(self.buffer):
            raise GGUFHeaderError("truncated header")

    def check_count(self, count: int, smallest_item: int) -> None:
        """A damaged count would otherwise have the walk crawl through gigabytes of weights."""
        if count * smallest_item > len(self.buffer) - self.offset:
            raise GGUFHeaderError("truncated header")

    def skip_strings(self, count: int) -> None:
        """Past a vocabulary's worth of strings: the hot loop of a header read, so no decoding."""
        unpack_length = struct.Struct(self.byte_order + "Q").unpack_from
        buffer, offset = self.buffer, self.offset
        for _ in range(count):
            offset += 8 + unpack_length(buffer, offset)[0]
        self.offset = offset


def read_gguf_metadata(path: Path, keys: tuple[str, ...] = LABEL_KEYS) -> dict:
    """The values of `keys` found in a GGUF file's metadata (absent keys are left out)."""
    with open(path, "rb") as file:
        head = file.read(24)
        if not head:
            raise GGUFHeaderError("empty file")
        if head[:4] != GGUF_MAGIC:
            raise GGUFHeaderError("not a GGUF file")
        if len(head) < 24:
            raise GGUFHeaderError("truncated header")
        with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as buffer:
            return _read_metadata(buffer, keys)


def gguf_byte_order(buffer) -> str:
    version = struct.unpack_from("<I", buffer, 4)[0]
    if version in SUPPORTED_VERSIONS:
        return "<"
    if struct.unpack_from(">I", buffer, 4)[0] in SUPPORTED_VERSIONS:
        return ">"
    raise GGUFHeaderError(f"GGUF version {version} is not supported")


def _read_metadata(buffer, keys: tuple[str, ...]) -> dict:
    cursor = HeaderCursor(buffer, gguf_byte_order(buffer), 16)  # past magic, version and tensor count
    found, kv_count = {}, cursor.scalar("Q")
    cursor.check_count(kv_count, 12)  # a key's length and a value's type at least
    try:
        for _ in range(kv_count):
            key, value_type = cursor.string(), cursor.scalar("I")
            if key in keys and value_type != GGUF_ARRAY:
                found[key] = cursor.value(value_type)
                if len(found) == len(keys):
                    break
            else:
                cursor.skip(value_type)
    except struct.error:
        raise GGUFHeaderError("truncated header") from None
    return found


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
        metadata = read_gguf_metadata(path)
        total_size = sum(part.stat().st_size for part in parts)
    except OSError as error:
        return f"unreadable ({error.strerror or error})"
    except ValueError as error:  # GGUFHeaderError
        return f"unreadable ({error})"
    name = str(metadata.get("general.name") or "").strip() or path.stem
    quantization = quantization_name(metadata.get("general.file_type"), path.name)
    return " · ".join(part for part in (name, quantization, human_size(total_size)) if part)


def model_label(ref: ModelRef) -> str:
    """What a model is, in one line: a GGUF file's name, type and size, a model folder's shape."""
    if ref.kind == "endpoint":
        return "on an OpenAI-compatible server"
    return gguf_label(ref.path) if ref.kind == "gguf" else describe(ref)


def model_records(refs: list[ModelRef], default_path: Path | None) -> list[dict]:
    """`chatapp models --json`: one dict per model."""
    return [{"name": ref.name, "path": str(ref.path), "kind": ref.kind, "source": ref.source,
             "size_bytes": ref.size_bytes, "label": model_label(ref), "default": ref.path == default_path}
            for ref in refs]


def shortened(label: str, width: int = MAX_LABEL_WIDTH) -> str:
    """One long error message would otherwise widen the label column of every line (--json has it whole)."""
    return label if len(label) <= width else label[:width - 1] + "…"


def model_lines(refs: list[ModelRef], default_path: Path | None) -> list[str]:
    """`chatapp models`: an aligned table, one line per model, then where the user's models go."""
    records = model_records(refs, default_path)
    rows = [[r["name"], r["source"], r["kind"], f"{r['size_bytes'] / 1e6:.1f} MB", shortened(r["label"]), r["path"]]
            for r in records]
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))] if rows else []
    size_column = 3
    lines = []
    for record, row in zip(records, rows):
        cells = [cell.rjust(widths[i]) if i == size_column else cell.ljust(widths[i]) for i, cell in enumerate(row)]
        lines.append(("* " if record["default"] else "  ") + "  ".join(cells).rstrip())
    if not records:
        lines.append("no models found")
    if any(record["default"] for record in records):
        lines.append("* the default model")
    lines.append(f"your models folder: {user_models_dir()} (put model folders or .gguf files there)")
    return lines
