"""Reading model.safetensors with numpy alone (no torch).

The format is 8 bytes of header length, a JSON header (name -> dtype, shape,
data_offsets) and the raw little-endian data. numpy has no bfloat16, so BF16
tensors are widened to float32 (exactly: a bf16 is the top half of an f32).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DTYPES = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2"), "F64": np.dtype("<f8")}


class WeightsError(ValueError):
    """model.safetensors cannot be read; a one-line message."""


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int  # absolute byte offset in the file
    end: int


class SafetensorsFile:
    """The tensors of one safetensors file, read one at a time through a memory map."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise WeightsError(f"{self.path}: missing")
        size = self.path.stat().st_size
        with open(self.path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise WeightsError(f"{self.path}: truncated (no header)")
            (header_length,) = struct.unpack("<Q", head)
            if header_length > min(size - 8, 100_000_000):
                raise WeightsError(f"{self.path}: not a safetensors file or truncated (header of {header_length} bytes)")
            try:
                header = json.loads(f.read(header_length))
            except (json.JSONDecodeError, UnicodeDecodeError) as error:
                raise WeightsError(f"{self.path}: damaged header ({error})") from None
        base = 8 + header_length
        self.metadata = header.pop("__metadata__", {}) or {}
        self.entries: dict[str, TensorEntry] = {}
        for name, info in header.items():
            try:
                dtype, shape, (begin, end) = info["dtype"], tuple(int(d) for d in info["shape"]), info["data_offsets"]
            except (KeyError, TypeError, ValueError):
                raise WeightsError(f"{self.path}: damaged header entry for {name}") from None
            if dtype not in DTYPES:
                raise WeightsError(f"{self.path}: {name} has dtype {dtype}; only F32, F16, BF16 and F64 can be exported")
            if end - begin != DTYPES[dtype].itemsize * int(np.prod(shape, dtype=np.int64)):
                raise WeightsError(f"{self.path}: {name} has {end - begin} bytes for shape {shape}")
            if base + end > size:
                raise WeightsError(f"{self.path}: truncated ({name} ends at byte {base + end}, the file has {size})")
            self.entries[name] = TensorEntry(name, dtype, shape, base + begin, base + end)
        self._map = np.memmap(self.path, dtype=np.uint8, mode="r") if size else None

    def float32(self, name: str) -> np.ndarray:
        """The tensor as a float32 array (a copy)."""
        entry = self.entries[name]
        raw = self._map[entry.start : entry.end]
        values = raw.view(DTYPES[entry.dtype])
        if entry.dtype == "BF16":
            values = (values.astype(np.uint32) << 16).view(np.float32)
        return np.array(values, dtype=np.float32).reshape(entry.shape)

    def close(self) -> None:
        self._map = None
