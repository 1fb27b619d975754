"""A GGUF file's metadata header, walked with bounds checks and without the gguf package.

The gguf package's reader builds an object for every vocabulary entry and tensor (slow for a
model listing) and trusts the counts it reads: a forged array count of 2**64 - 1 had it take
16 GB of memory before anything failed. Here every count and length is checked against the
bytes left in the file first. Torch- and numpy-free.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
GGUF_STRING, GGUF_ARRAY = 8, 9
GGUF_SCALAR_FORMATS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


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
        text = bytes(self.buffer[self.offset : self.offset + length]).decode("utf-8", errors="replace")
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


def read_gguf_metadata(path: str | Path, keys: tuple[str, ...] = ()) -> dict:
    """The values of `keys` found in a GGUF file's metadata (absent keys are left out). With no keys
    it walks every value: a header whose counts or lengths overrun the file raises GGUFHeaderError."""
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
    except (struct.error, OverflowError):  # a length or offset past the file (or past any offset)
        raise GGUFHeaderError("truncated header") from None
    return found


GGML_MAX_DIMS = 4


@dataclass(frozen=True)
class ArrayField:
    """An array value, not decoded: its item type, count, and where its items lie in the file."""

    item_type: int
    count: int
    start: int
    end: int


@dataclass(frozen=True)
class TensorEntry:
    """One row of the tensor table: dims fastest first (ggml's ne order), the ggml type's number, and
    the offset of its data from the start of the data section."""

    name: str
    dims: tuple[int, ...]
    ggml_type: int
    offset: int


@dataclass
class GGUFHeader:
    """Everything before the weights, read with bounds checks: scalar and string values decoded,
    arrays left where they are (ArrayField; read_array decodes one), the tensor table."""

    path: Path
    size: int
    version: int
    byte_order: str
    fields: dict[str, object]
    tensors: list[TensorEntry]
    data_start: int  # where tensor data begins (after the table, aligned)
    duplicate_keys: list[str] = field(default_factory=list)

    def array_bytes(self, array: ArrayField) -> bytes:
        with open(self.path, "rb") as file:  # seek and read: os.pread is not on Windows
            file.seek(array.start)
            return file.read(array.end - array.start)

    def read_array(self, key: str) -> list | None:
        """The array `key` decoded (a list of str, int, float or bool), or None when absent or not an array."""
        array = self.fields.get(key)
        if not isinstance(array, ArrayField):
            return None
        data = self.array_bytes(array)
        cursor = HeaderCursor(data, self.byte_order, 0)
        if array.item_type in GGUF_SCALAR_FORMATS:
            fmt = GGUF_SCALAR_FORMATS[array.item_type]
            return list(struct.unpack_from(f"{self.byte_order}{array.count}{fmt}", data, 0))
        if array.item_type == GGUF_STRING:
            return [cursor.string() for _ in range(array.count)]
        return None  # arrays of arrays: nothing chatapp reads


def read_gguf_header(path: str | Path) -> GGUFHeader:
    """The header of a GGUF file: metadata and tensor table, every count and length checked against
    the file. GGUFHeaderError says what is wrong. The vocabulary is walked past, never decoded."""
    path = Path(path)
    with open(path, "rb") as file:
        head = file.read(24)
        if not head:
            raise GGUFHeaderError("empty file")
        if head[:4] != GGUF_MAGIC:
            raise GGUFHeaderError("not a GGUF file")
        if len(head) < 24:
            raise GGUFHeaderError("truncated header")
        size = os.fstat(file.fileno()).st_size
        with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as buffer:
            try:
                return _read_header(path, size, buffer)
            except (struct.error, OverflowError):
                raise GGUFHeaderError("truncated header") from None


def _read_header(path: Path, size: int, buffer) -> GGUFHeader:
    byte_order = gguf_byte_order(buffer)
    version = struct.unpack_from(byte_order + "I", buffer, 4)[0]
    cursor = HeaderCursor(buffer, byte_order, 8)
    n_tensors, kv_count = cursor.scalar("Q"), cursor.scalar("Q")
    cursor.check_count(kv_count, 12)  # a key's length and a value's type at least
    fields: dict[str, object] = {}
    duplicates: list[str] = []
    for _ in range(kv_count):
        key, value_type = cursor.string(), cursor.scalar("I")
        if key in fields:
            duplicates.append(key)
        if value_type == GGUF_ARRAY:
            item_type, count = cursor.scalar("I"), cursor.scalar("Q")
            cursor.offset -= 12
            start = cursor.offset + 12
            cursor.skip(GGUF_ARRAY)
            fields.setdefault(key, ArrayField(item_type, count, start, cursor.offset))
        else:
            value = cursor.value(value_type)
            fields.setdefault(key, value)
    cursor.check_count(n_tensors, 24)  # a name's length, n_dims, type and offset at least
    tensors = []
    for _ in range(n_tensors):
        name = cursor.string()
        n_dims = cursor.scalar("I")
        if n_dims > GGML_MAX_DIMS:
            raise GGUFHeaderError(f"tensor {name[:80]} has {n_dims} dimensions (at most {GGML_MAX_DIMS})")
        dims = tuple(cursor.scalar("Q") for _ in range(n_dims))
        ggml_type, offset = cursor.scalar("I"), cursor.scalar("Q")
        tensors.append(TensorEntry(name, dims, ggml_type, offset))
    alignment = fields.get("general.alignment", 32)
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
        raise GGUFHeaderError(f"general.alignment is {alignment!r}, not a power of 2")
    data_start = -(-cursor.offset // alignment) * alignment
    return GGUFHeader(path, size, version, byte_order, fields, tensors, data_start, duplicates)
