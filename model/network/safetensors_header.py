"""What a safetensors file holds (names, dtypes, shapes, where each tensor's bytes
lie), read from its header alone, and the tensors our GPT needs for a config: so
a model folder is checked before anything big is allocated. Torch-free,
numpy-free: the loader uses it, and so does the exporter (quant/weights.py reads
the data through a memory map, quant/gguf_export.py checks the tensors here).

A safetensors file: 8 bytes (little-endian header length), a JSON header
{name: {"dtype", "shape", "data_offsets"}, "__metadata__": {...}}, then the data.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit
FLOAT_DTYPES = {"F16": 2, "BF16": 2, "F32": 4, "F64": 8}
ITEM_SIZES = {
    **FLOAT_DTYPES,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
    "I16": 2,
    "U16": 2,
    "I32": 4,
    "U32": 4,
    "I64": 8,
    "U64": 8,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
}
# the config.json keys that size the network: each a positive integer
ARCHITECTURE_INTS = ("vocab_size", "context_length", "n_layer", "n_head", "n_embd")


class HeaderError(ValueError):
    """A file or config that does not describe a loadable model; a one-line message."""


@dataclass(frozen=True)
class TensorEntry:
    dtype: str
    shape: tuple[int, ...]
    start: int  # absolute byte offsets of the tensor's data in the file
    end: int


def read_header(path: str | Path) -> dict[str, TensorEntry]:
    """name -> TensorEntry for every tensor, after checking that each one's bytes lie in the file."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        start = f.read(8)
        if len(start) < 8:
            raise HeaderError(f"{path}: unreadable or truncated (no safetensors header)")
        (length,) = struct.unpack("<Q", start)
        if length > min(MAX_HEADER_BYTES, size - 8):
            raise HeaderError(f"{path}: unreadable or truncated (a header of {length} bytes in a file of {size})")
        raw = f.read(length)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise HeaderError(f"{path}: not a safetensors file (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise HeaderError(f"{path}: not a safetensors file (its header is not an object)")
    data_size = size - 8 - length
    return {
        name: _entry(path, name, value, 8 + length, data_size)
        for name, value in header.items()
        if name != "__metadata__"
    }


def _entry(path: Path, name: str, value, base: int, data_size: int) -> TensorEntry:
    try:
        dtype, shape, (begin, end) = value["dtype"], tuple(value["shape"]), value["data_offsets"]
        ok = (
            dtype in ITEM_SIZES
            and all(type(n) is int and n >= 0 for n in (*shape, begin, end))
            and 0 <= begin <= end <= data_size
            and end - begin == math.prod(shape) * ITEM_SIZES[dtype]
        )
    except (TypeError, KeyError, ValueError):
        ok = False
    if not ok:
        raise HeaderError(
            f"{path}: unreadable or truncated (the header's entry for {name} is damaged or points "
            f"past the end of the file)"
        )
    return TensorEntry(dtype, shape, base + begin, base + end)


def checked_architecture(values, config_path: str | Path) -> dict:
    """config.json's "architecture" with each size a positive integer (not "6", 6.0 or true) and
    n_embd divisible by n_head; the message names the file and the key."""
    if not isinstance(values, dict):
        raise HeaderError(f"{config_path}: architecture must be an object, got {values!r}")
    for key in ARCHITECTURE_INTS:
        value = values.get(key)
        if type(value) is not int or value < 1:
            raise HeaderError(f"{config_path}: {key} must be a positive integer, got {value!r}")
    for key, low, high in (("dropout", 0.0, 1.0), ("layer_norm_epsilon", 0.0, 1.0)):
        value = values.get(key, 0.5)
        if type(value) not in (int, float) or not low <= value < high or not math.isfinite(value):
            raise HeaderError(f"{config_path}: {key} must be a number in [{low:g}, {high:g}), got {value!r}")
    if values["n_embd"] % values["n_head"]:
        raise HeaderError(f"{config_path}: n_embd {values['n_embd']} is not divisible by n_head {values['n_head']}")
    return values


def gpt_shapes(architecture: dict) -> dict[str, tuple[int, ...]]:
    """Every tensor of model.network.gpt.GPT's state dict but the tied lm_head, by arithmetic (nothing built)."""
    width, vocab, context = architecture["n_embd"], architecture["vocab_size"], architecture["context_length"]
    shapes: dict[str, tuple[int, ...]] = {
        "token_embedding.weight": (vocab, width),
        "position_embedding.weight": (context, width),
    }
    block: dict[str, tuple[int, ...]] = {
        "ln_1.weight": (width,),
        "ln_1.bias": (width,),
        "attn.qkv.weight": (3 * width, width),
        "attn.qkv.bias": (3 * width,),
        "attn.proj.weight": (width, width),
        "attn.proj.bias": (width,),
        "ln_2.weight": (width,),
        "ln_2.bias": (width,),
        "mlp.up.weight": (4 * width, width),
        "mlp.up.bias": (4 * width,),
        "mlp.down.weight": (width, 4 * width),
        "mlp.down.bias": (width,),
    }
    for i in range(architecture["n_layer"]):
        shapes.update({f"blocks.{i}.{name}": shape for name, shape in block.items()})
    shapes.update({"ln_f.weight": (width,), "ln_f.bias": (width,)})
    return shapes


def tensor_count(architecture: dict) -> int:
    return 4 + 12 * architecture["n_layer"]


def check_tensors(
    path: str | Path,
    entries: dict[str, TensorEntry],
    architecture: dict,
    expected_shapes: Callable[[dict], dict[str, tuple[int, ...]]],
    extra_allowed: bool = False,
) -> None:
    """The file holds exactly the tensors expected_shapes(architecture) names (an extra tied
    lm_head.weight aside; any extra with extra_allowed), each of its shape and of a float type.
    Counted first: a config that claims a million layers is refused before a million names are made."""
    present = {name: entry for name, entry in entries.items() if name != "lm_head.weight"}
    count = len(present) if not extra_allowed else min(len(present), tensor_count(architecture))
    if count != tensor_count(architecture):
        raise HeaderError(
            f"{path}: {len(present)} tensors, but config.json's n_layer {architecture['n_layer']} "
            f"implies {tensor_count(architecture)}"
        )
    expected = expected_shapes(architecture)
    missing = sorted(set(expected) - set(present))
    unexpected = sorted(set(present) - set(expected)) if not extra_allowed else []
    if missing or unexpected:
        raise HeaderError(
            f"{path}: tensors do not match config.json (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    for name in expected:
        entry = present[name]
        if entry.shape != expected[name]:
            raise HeaderError(f"{path}: {name} has shape {entry.shape}, config.json implies {expected[name]}")
        if entry.dtype not in FLOAT_DTYPES:
            raise HeaderError(
                f"{path}: {name} is {entry.dtype}; weights must be a float type ({', '.join(FLOAT_DTYPES)})"
            )
