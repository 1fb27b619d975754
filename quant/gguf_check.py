"""A GGUF file checked with the gguf reader before llama.cpp sees it.

llama.cpp crashes or aborts on some damaged files; this catches them first:
magic, version, a readable header, an architecture llama.cpp knows, every
tensor's data inside the file (truncation), no zero-sized tensor, norm
epsilons finite and positive, the byte tokens of a SentencePiece vocabulary,
and for our own "gpt2" files the exact tensor set and shapes. Every problem
raises GGUFFileError, whose message is one line naming the file.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from pathlib import Path

from model.errors import one_line
from quant.gguf_header import GGUF_MAGIC, SUPPORTED_VERSIONS, GGUFHeaderError, read_gguf_metadata
from quant.gguf_layout import CHATAPP_KEY, tensor_names

SUPPORTED_CHAT_FORMAT = 1


class GGUFFileError(ValueError):
    """A GGUF file that cannot be used; the message is one line for the user."""


@dataclass
class GGUFInfo:
    path: Path
    size_bytes: int
    version: int
    architecture: str
    name: str
    context_length: int | None
    n_tensors: int
    file_type: int | None
    chat_template: str | None
    chatapp: bool  # written by chatapp: our tokenizer and chat format
    chat_format_version: int | None
    vocab_size: int | None
    tokenizer_model: str | None = None  # tokenizer.ggml.model: "gpt2" (byte-level BPE), "llama" (SentencePiece), ...
    file_type_name: str | None = None  # general.file_type by name: "F16", "Q8_0", "Q4_K_M"; None if absent or unknown


def field_value(reader, key: str, default=None):
    field = reader.fields.get(key)
    if field is None:
        return default
    try:
        return field.contents()
    except Exception:  # a damaged value reads as absent; the checks below then name it
        return default


def read_gguf(path: str | Path):
    """A GGUFReader on the file, or GGUFFileError with a one-line reason."""
    from gguf import GGUFReader

    path = Path(path)
    if not path.exists():
        raise GGUFFileError(f"{path}: no such file")
    if not path.is_file():
        raise GGUFFileError(f"{path}: not a file")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
    if len(head) < 8:
        raise GGUFFileError(f"{path}: not a GGUF file ({size} bytes: empty or truncated)")
    if head[:4] != GGUF_MAGIC:
        raise GGUFFileError(f"{path}: not a GGUF file (it starts with {head[:4]!r}, not {GGUF_MAGIC!r})")
    (version,) = struct.unpack("<I", head[4:8])
    if version not in SUPPORTED_VERSIONS:
        raise GGUFFileError(f"{path}: GGUF version {version} is not supported (only {', '.join(map(str, SUPPORTED_VERSIONS))})")
    try:
        read_gguf_metadata(path)  # every count and length checked first: the reader trusts them
    except (GGUFHeaderError, struct.error, OSError) as error:
        raise GGUFFileError(f"{path}: damaged or truncated GGUF file ({one_line(error, 200)})") from None
    try:
        reader = GGUFReader(path, "r")
    except Exception as error:  # the reader raises many kinds on damaged files
        raise GGUFFileError(f"{path}: damaged or truncated GGUF file ({one_line(error, 200)})") from None
    for tensor in reader.tensors:
        end = int(tensor.data_offset) + int(tensor.n_bytes)
        if end > size or tensor.data.nbytes != int(tensor.n_bytes):
            raise GGUFFileError(f"{path}: truncated ({tensor.name} ends at byte {end}, the file has {size})")
    return reader


def _check_gpt2(path: Path, reader, tensors: dict) -> None:
    n_layer = field_value(reader, "gpt2.block_count")
    width = field_value(reader, "gpt2.embedding_length")
    context = field_value(reader, "gpt2.context_length")
    if not all(isinstance(v, int) and v > 0 for v in (n_layer, width, context)):
        raise GGUFFileError(f"{path}: gpt2 hyper-parameters missing (block_count, embedding_length, context_length)")
    expected = {name for name, _ in tensor_names(n_layer)}
    optional = {"output.weight"}
    missing = sorted(expected - set(tensors))
    unexpected = sorted(set(tensors) - expected - optional)
    if missing or unexpected:
        raise GGUFFileError(f"{path}: tensors do not match a gpt2 model of {n_layer} blocks (missing {missing[:3]}, unexpected {unexpected[:3]})")
    position = [int(d) for d in tensors["position_embd.weight"].shape]  # ne order: (width, rows)
    if position != [width, context]:
        raise GGUFFileError(f"{path}: position_embd.weight has shape {position[::-1]}, expected [{context}, {width}]")
    tokens = field_value(reader, "tokenizer.ggml.tokens")
    embedding = [int(d) for d in tensors["token_embd.weight"].shape]
    if tokens is None or embedding != [width, len(tokens)]:
        raise GGUFFileError(f"{path}: token_embd.weight has shape {embedding[::-1]}, but the vocabulary has "
                            f"{None if tokens is None else len(tokens)} tokens")


def _check_no_empty_tensor(path: Path, tensors: dict) -> None:
    # llama.cpp aborts (GGML_ASSERT) on a zero-sized weight while loading
    for name, tensor in tensors.items():
        if any(int(d) == 0 for d in tensor.shape):
            raise GGUFFileError(f"{path}: tensor {name} has a zero-sized dimension (shape {[int(d) for d in tensor.shape][::-1]})")


def _is_epsilon_key(key: str) -> bool:
    return key.endswith(("_epsilon", "norm_eps"))


def _check_epsilons(path: Path, reader) -> None:
    # a NaN or negative norm epsilon aborts llama.cpp at the first eval: GGML_ASSERT(eps >= 0.0f)
    for key in filter(_is_epsilon_key, reader.fields):
        value = field_value(reader, key)
        for number in value if isinstance(value, list) else [value]:
            if isinstance(number, float) and not (math.isfinite(number) and number > 0):
                raise GGUFFileError(f"{path}: {key} is {number:g}: a norm epsilon must be a finite number above 0")


def _check_byte_tokens(path: Path, tokenizer_model, tokens) -> None:
    # SentencePiece falls back to <0xXX> tokens for text outside its pieces;
    # without them llama.cpp's tokenizer throws std::out_of_range and the process dies
    if tokenizer_model != "llama":
        return
    present = set(tokens or ())
    missing = [f"<0x{b:02X}>" for b in range(256) if f"<0x{b:02X}>" not in present]
    if missing:
        raise GGUFFileError(f"{path}: SentencePiece vocabulary lacks {len(missing)} of the 256 byte tokens (e.g. {missing[0]})")


def file_type_name(file_type) -> str | None:
    """general.file_type as llama.cpp names it: 1 -> "F16", 15 -> "Q4_K_M"."""
    from gguf import LlamaFileType

    try:
        name = LlamaFileType(file_type).name
    except (ValueError, TypeError):
        return None
    return name.removeprefix("MOSTLY_").removeprefix("ALL_")


def check_gguf(path: str | Path, reader=None) -> GGUFInfo:
    """Check a GGUF file (or its reader, already open); return what the backends need."""
    import gguf

    path = Path(path)
    reader = reader if reader is not None else read_gguf(path)
    architecture = field_value(reader, "general.architecture")
    if not isinstance(architecture, str):
        raise GGUFFileError(f"{path}: no general.architecture: not a model file")
    if field_value(reader, "general.type") == "adapter":
        raise GGUFFileError(f"{path}: a LoRA adapter, not a model")
    known = set(gguf.MODEL_ARCH_NAMES.values())
    if architecture not in known:
        raise GGUFFileError(f"{path}: architecture {architecture!r} is not one llama.cpp runs")
    tensors = {t.name: t for t in reader.tensors}
    if not tensors:
        raise GGUFFileError(f"{path}: has no tensors: not a model file")
    tokens = field_value(reader, "tokenizer.ggml.tokens")
    tokenizer_model = field_value(reader, "tokenizer.ggml.model")
    _check_no_empty_tensor(path, tensors)
    _check_epsilons(path, reader)
    _check_byte_tokens(path, tokenizer_model, tokens)
    chat_format_version = field_value(reader, CHATAPP_KEY)
    chatapp = chat_format_version is not None
    if architecture == "gpt2":
        _check_gpt2(path, reader, tensors)
    if chatapp:
        if architecture != "gpt2":
            raise GGUFFileError(f"{path}: marked as a chatapp model but its architecture is {architecture!r}")
        if not isinstance(chat_format_version, int) or chat_format_version > SUPPORTED_CHAT_FORMAT:
            raise GGUFFileError(f"{path}: chat format version {chat_format_version} is newer than this chatapp understands")
    context = field_value(reader, f"{architecture}.context_length")
    file_type = field_value(reader, "general.file_type")
    return GGUFInfo(
        path=path,
        size_bytes=path.stat().st_size,
        version=int(field_value(reader, "GGUF.version", 3)),
        architecture=architecture,
        name=str(field_value(reader, "general.name") or path.stem),
        context_length=int(context) if isinstance(context, int) else None,
        n_tensors=len(tensors),
        file_type=file_type,
        chat_template=field_value(reader, "tokenizer.chat_template"),
        chatapp=chatapp,
        chat_format_version=chat_format_version,
        vocab_size=len(tokens) if tokens is not None else None,
        tokenizer_model=tokenizer_model if isinstance(tokenizer_model, str) else None,
        file_type_name=file_type_name(file_type),
    )


def tensor_types(path: str | Path) -> dict[str, str]:
    """Tensor name -> GGML type name (F32, Q8_0, Q6_K, ...)."""
    return {t.name: t.tensor_type.name for t in read_gguf(path).tensors}


def chatapp_tokenizer(path: str | Path, reader=None):
    """Our Tokenizer, rebuilt from the vocabulary of a GGUF file chatapp wrote."""
    from quant.gguf_vocab import tokenizer_from_gguf

    reader = reader if reader is not None else read_gguf(path)
    tokens = field_value(reader, "tokenizer.ggml.tokens")
    types = field_value(reader, "tokenizer.ggml.token_type")
    if tokens is None or types is None:
        raise GGUFFileError(f"{path}: no tokenizer vocabulary")
    try:
        return tokenizer_from_gguf(tokens, types)
    except ValueError as error:
        raise GGUFFileError(f"{path}: {error}") from None

