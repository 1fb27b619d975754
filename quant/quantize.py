"""Quantizing a GGUF file with llama.cpp's own quantizer (llama_model_quantize),
so the result is what `llama-quantize` makes, and reporting which tensors did
not get the asked type, and why.

llama.cpp quantizes a matrix in blocks along its rows: 32 values for Q4_0 ..
Q8_0, 256 for the K-quants. A matrix whose row length is not a multiple of the
block falls back to another type. Some tensors get another type by design:
position embeddings are never quantized, and the K-quant "mixes" (Q4_K_M,
Q5_K_M) and the output matrix get more bits in a few places.
"""

from __future__ import annotations

import ctypes
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from model.inference.threads import available_cores
from quant.gguf_layout import QUANT_TYPES, ExportError, ProgressFn

_TENSOR_LINE = re.compile(r"\[\s*(\d+)\s*/\s*(\d+)\s*\]\s+(\S+)")
# llama.cpp's wording (checked against its 2026-10 sources, as vendored by llama-cpp-python 0.3.36):
#   warning: blk.0.attn_qkv.weight - ncols 64 not divisible by 256 (required for type q4_K) -> falling back to q5_0
#   llama_model_quantize_impl: WARNING: 6 of 28 tensor(s) required fallback quantization
_FALLBACK_LINE = re.compile(r"(\S+)\s+-\s+ncols\s+(\d+)\s+not divisible by\s+(\d+)\s+\(required for type\s+(\w+)\)")
_FALLBACK_COUNT = re.compile(r"(\d+)\s+(?:of\s+\d+\s+)?tensor\(s\)\s+required fallback")


@dataclass
class TensorNote:
    """A matrix whose type in the file is not the one asked for, and why."""

    name: str
    shape: tuple[int, ...]  # (rows, row length), as in PyTorch
    type: str  # the type in the file
    reason: str


@dataclass
class QuantizeResult:
    llama_fallback_count: int | None = None  # llama.cpp's own count
    logged: dict[str, tuple[int, int, str]] = field(default_factory=dict)  # see logged_fallbacks
    log: list[str] = field(default_factory=list)


def bits_per_weight(type_name: str) -> float:
    import gguf

    kind = gguf.GGMLQuantizationType[type_name]
    block, size = gguf.GGML_QUANT_SIZES[kind]
    return size * 8 / block


def logged_fallbacks(lines: list[str]) -> dict[str, tuple[int, int, str]]:
    """name -> (row length, block, the type llama.cpp wanted) from the quantizer's warnings."""
    found = {}
    for line in lines:
        match = _FALLBACK_LINE.search(line)
        if match:
            found[match.group(1)] = (int(match.group(2)), int(match.group(3)), match.group(4).upper())
    return found


def classify(
    types: dict[str, tuple[str, tuple[int, ...]]], out_type: str, logged: dict[str, tuple[int, int, str]] | None = None
) -> tuple[list[TensorNote], list[TensorNote]]:
    """Split the matrices not of the asked type into fallbacks and by-design choices.

    types: name -> (GGML type name, shape as (rows, row length)); logged: what
    llama.cpp's log said fell back (it knows the type its recipe wanted).
    """
    import gguf

    base = QUANT_TYPES[out_type][1]
    block = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[base]][0]
    fallbacks, kept = [], []
    for name, (kind, shape) in types.items():
        if len(shape) < 2 or kind == base:
            continue
        if logged and name in logged:
            width, wanted_block, wanted = logged[name]
            fallbacks.append(
                TensorNote(
                    name,
                    shape,
                    kind,
                    f"rows of {width} values are not a multiple of {wanted_block}, the {wanted} block size",
                )
            )
        elif name == "position_embd.weight":
            kept.append(TensorNote(name, shape, kind, "llama.cpp never quantizes position embeddings"))
        elif shape[-1] % block:
            fallbacks.append(
                TensorNote(
                    name,
                    shape,
                    kind,
                    f"rows of {shape[-1]} values are not a multiple of {block}, the {base} block size",
                )
            )
        elif bits_per_weight(kind) > bits_per_weight(base):
            kept.append(
                TensorNote(name, shape, kind, f"llama.cpp's {out_type.upper()} recipe gives this tensor more bits")
            )
        else:
            kept.append(TensorNote(name, shape, kind, f"llama.cpp chose {kind} for this tensor"))
    return fallbacks, kept


T = TypeVar("T")


def interruptible(function: Callable[..., T], *args: object) -> T:
    """function(*args) in a worker thread, the main thread waiting in short steps: a C call
    never returns to Python until it ends, so Ctrl+C (KeyboardInterrupt) or SIGTERM would
    wait for it, or land in a log callback where ctypes prints and drops it. Interrupted,
    this raises at once; the worker (a daemon) ends with the process."""
    outcome: dict = {}

    def work() -> None:
        try:
            outcome["value"] = function(*args)
        except BaseException as error:  # handed to the waiting thread
            outcome["error"] = error

    worker = threading.Thread(target=work, name="llama-quantize", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(0.05)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def quantize_file(
    source: str | Path,
    target: str | Path,
    out_type: str,
    *,
    threads: int | None = None,
    progress: ProgressFn | None = None,
    log_dir: str | Path | None = None,
) -> QuantizeResult:
    """Quantize an F32/F16/BF16 GGUF file into `target` (not atomic: the caller renames).

    `classify` then tells, from the target's tensor types and this result's
    `logged`, which tensors fell back.
    """
    if out_type not in QUANT_TYPES:
        raise ExportError(f"cannot quantize to {out_type!r}; one of {', '.join(QUANT_TYPES)}")
    try:
        import llama_cpp
    except ImportError as error:
        raise ExportError(f"quantizing needs llama-cpp-python, which this install lacks ({error})") from None
    from quant.llama_log import capture, route_logs

    route_logs(log_dir)
    params = llama_cpp.llama_model_quantize_default_params()  # the struct's fields change between versions
    params.ftype = QUANT_TYPES[out_type][0]
    params.nthread = threads or available_cores()  # quantizing is bulk work: every core

    def on_line(line: str) -> None:
        match = _TENSOR_LINE.search(line)
        if match and progress:
            try:
                progress("quantizing", int(match.group(1)), int(match.group(2)))
            except Exception:  # an exception cannot cross llama.cpp's C frames
                pass

    with capture(on_line) as lines:
        code = interruptible(
            llama_cpp.llama_model_quantize, str(source).encode(), str(target).encode(), ctypes.byref(params)
        )
    if code != 0:
        errors = [line.strip() for line in lines if "error" in line.lower() or "failed" in line.lower()]
        detail = errors[-1] if errors else "see the llama.cpp log"
        raise ExportError(f"llama.cpp could not quantize to {out_type} (code {code}): {detail}")
    result = QuantizeResult(log=lines, logged=logged_fallbacks(lines))
    counts = [int(m.group(1)) for m in map(_FALLBACK_COUNT.search, lines) if m]
    result.llama_fallback_count = counts[-1] if counts else 0
    return result
