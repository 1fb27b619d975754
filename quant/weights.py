"""Reading model.safetensors with numpy alone (no torch).

The header (names, dtypes, shapes, where each tensor's bytes lie) is read and
checked by model.network.safetensors_header, the loader's own reader; here the
data is read through a memory map. numpy has no bfloat16, so BF16 tensors are
widened to float32 (exactly: a bf16 is the top half of an f32).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from model.network.safetensors_header import HeaderError, TensorEntry, read_header

DTYPES: dict[str, np.dtype] = {
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
    "F64": np.dtype("<f8"),
}


class WeightsError(ValueError):
    """model.safetensors cannot be read; a one-line message."""


class SafetensorsFile:
    """The tensors of one safetensors file, read one at a time through a memory map."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise WeightsError(f"{self.path}: missing")
        try:
            self.entries: dict[str, TensorEntry] = read_header(self.path)
        except HeaderError as error:
            raise WeightsError(str(error)) from None
        for name, entry in self.entries.items():
            if entry.dtype not in DTYPES:
                raise WeightsError(
                    f"{self.path}: {name} has dtype {entry.dtype}; only F32, F16, BF16 and F64 can be exported"
                )
        size = self.path.stat().st_size
        self._map: np.memmap | None = np.memmap(self.path, dtype=np.uint8, mode="r") if size else None

    def float32(self, name: str) -> np.ndarray:
        """The tensor as a float32 array (a copy)."""
        entry = self.entries[name]
        assert self._map is not None, "closed, or an empty file (which has no tensors)"
        raw = self._map[entry.start : entry.end]
        values = raw.view(DTYPES[entry.dtype])
        if entry.dtype == "BF16":
            values = (values.astype(np.uint32) << 16).view(np.float32)
        return np.array(values, dtype=np.float32).reshape(entry.shape)

    def close(self) -> None:
        self._map = None
