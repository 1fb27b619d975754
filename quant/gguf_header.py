"""A GGUF file's metadata header, walked with bounds checks and without the gguf package.

The gguf package's reader builds an object for every vocabulary entry and tensor (slow for a
model listing) and trusts the counts it reads: a forged array count of 2**64 - 1 had it take
16 GB of memory before anything failed. Here every count and length is checked against the
bytes left in the file first. Torch- and numpy-free.
"""

from __future__ import annotations

import mmap
import struct
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
