"""A GGUF file checked before llama.cpp sees it, from its header and tensor table alone.

llama.cpp crashes or aborts on some damaged files; this catches them first:
magic, version, a readable header, an architecture llama.cpp knows, every
tensor's data inside the file (truncation), no zero-sized tensor, norm
epsilons finite and positive, the byte tokens of a SentencePiece vocabulary,
and for our own "gpt2" files the exact tensor set and shapes. Every problem
raises GGUFFileError, whose message is one line naming the file.
"""

from __future__ import annotations

import importlib.util
import math
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

from model.errors import one_line
from quant.gguf_header import (
    GGUF_MAGIC,
    GGUF_STRING,
    SUPPORTED_VERSIONS,
    ArrayField,
    GGUFHeader,
    GGUFHeaderError,
    TensorEntry,
    read_gguf_header,
)
from quant.gguf_layout import CHATAPP_KEY, tensor_names

SUPPORTED_CHAT_FORMAT = 1
GGUF_UINT32, GGUF_INT32 = 4, 5


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
    # where tokenizer.ggml.token_type's 32-bit items lie: (file offset, count, numpy dtype), for the
    # engine to find the few special tokens without asking llama.cpp about every token
    token_types_at: tuple[int, int, str] | None = None


def field_value(reader, key: str, default=None):
    field = reader.fields.get(key)
    if field is None:
        return default
    try:
        return field.contents()
    except Exception:  # a damaged value reads as absent; the checks below then name it
        return default


def _open_checks(path: Path) -> int:
    """Exists, is a file, starts with GGUF's magic and a version we read: the file's size."""
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
        raise GGUFFileError(
            f"{path}: GGUF version {version} is not supported (only {', '.join(map(str, SUPPORTED_VERSIONS))})"
        )
    return size


def gguf_constants():
    """gguf-py's constants (architecture names, ggml type sizes, file types) without the package:
    `import gguf` imports numpy and its reader and writer, a third of a second at every start."""
    loaded = sys.modules.get("gguf.constants") or sys.modules.get("chatapp_gguf_constants")
    if loaded is not None:
        return loaded
    try:
        spec = importlib.util.find_spec("gguf")
        assert spec is not None and spec.origin is not None
        location = Path(spec.origin).parent / "constants.py"
        constants_spec = importlib.util.spec_from_file_location("chatapp_gguf_constants", location)
        assert constants_spec is not None and constants_spec.loader is not None
        module = importlib.util.module_from_spec(constants_spec)
        constants_spec.loader.exec_module(module)
    except Exception:  # noqa: BLE001 - a gguf whose layout differs: the package itself then
        import gguf.constants as module
    sys.modules["chatapp_gguf_constants"] = module
    return module


def read_header(path: str | Path) -> GGUFHeader:
    """The file's header (metadata and tensor table, no vocabulary decoded), or GGUFFileError with a
    one-line reason: a count or length past the file, a tensor of an unknown type or past the end."""
    path = Path(path)
    size = _open_checks(path)
    try:
        header = read_gguf_header(path)
    except (GGUFHeaderError, struct.error, OSError) as error:
        raise GGUFFileError(f"{path}: damaged or truncated GGUF file ({one_line(error, 200)})") from None
    if header.duplicate_keys:
        raise GGUFFileError(f"{path}: damaged GGUF file (the key {header.duplicate_keys[0][:80]!r} appears twice)")
    sizes = gguf_constants().GGML_QUANT_SIZES
    names = set()
    for tensor in header.tensors:
        if tensor.name in names:
            raise GGUFFileError(f"{path}: damaged GGUF file (two tensors named {tensor.name[:80]!r})")
        names.add(tensor.name)
        block = _block_of(sizes, tensor.ggml_type)
        if block is None:
            raise GGUFFileError(
                f"{path}: damaged or truncated GGUF file "
                f"(tensor {tensor.name[:80]} has unknown type {tensor.ggml_type})"
            )
        block_size, type_size = block
        elements = math.prod(tensor.dims)
        if tensor.dims and tensor.dims[0] % block_size:
            raise GGUFFileError(
                f"{path}: damaged GGUF file (tensor {tensor.name[:80]}: rows of {tensor.dims[0]} "
                f"are not whole blocks of {block_size})"
            )
        end = header.data_start + tensor.offset + elements // block_size * type_size
        if end > size:
            raise GGUFFileError(f"{path}: truncated ({tensor.name} ends at byte {end}, the file has {size})")
    return header


def _block_of(sizes, ggml_type: int) -> tuple[int, int] | None:
    for kind, block in sizes.items():
        if int(kind) == ggml_type:
            return block
    return None


def read_gguf(path: str | Path):
    """gguf-py's GGUFReader on the file (after the bounded checks), for tools and tests that need its
    objects. Slow on a large vocabulary (it builds an object per token): never on the load path."""
    from gguf import GGUFReader

    path = Path(path)
    read_header(path)  # every count and length checked first: the reader trusts them
    try:
        return GGUFReader(path, "r")
    except Exception as error:  # the reader raises many kinds on damaged files
        raise GGUFFileError(f"{path}: damaged or truncated GGUF file ({one_line(error, 200)})") from None


def _check_gpt2(path: Path, header: GGUFHeader, tensors: dict[str, TensorEntry]) -> None:
    n_layer = header.fields.get("gpt2.block_count")
    width = header.fields.get("gpt2.embedding_length")
    context = header.fields.get("gpt2.context_length")
    if not all(isinstance(v, int) and v > 0 for v in (n_layer, width, context)):
        raise GGUFFileError(f"{path}: gpt2 hyper-parameters missing (block_count, embedding_length, context_length)")
    assert isinstance(n_layer, int)
    expected = {name for name, _ in tensor_names(n_layer)}
    optional = {"output.weight"}
    missing = sorted(expected - set(tensors))
    unexpected = sorted(set(tensors) - expected - optional)
    if missing or unexpected:
        raise GGUFFileError(
            f"{path}: tensors do not match a gpt2 model of {n_layer} blocks "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    position = list(tensors["position_embd.weight"].dims)  # ne order: (width, rows)
    if position != [width, context]:
        raise GGUFFileError(f"{path}: position_embd.weight has shape {position[::-1]}, expected [{context}, {width}]")
    n_tokens = _vocab_size(header)
    embedding = list(tensors["token_embd.weight"].dims)
    if n_tokens is None or embedding != [width, n_tokens]:
        raise GGUFFileError(
            f"{path}: token_embd.weight has shape {embedding[::-1]}, but the vocabulary has {n_tokens} tokens"
        )


def _vocab_size(header: GGUFHeader) -> int | None:
    tokens = header.fields.get("tokenizer.ggml.tokens")
    return tokens.count if isinstance(tokens, ArrayField) and tokens.item_type == GGUF_STRING else None


def _check_no_empty_tensor(path: Path, tensors: dict[str, TensorEntry]) -> None:
    # llama.cpp aborts (GGML_ASSERT) on a zero-sized weight while loading
    for name, tensor in tensors.items():
        if any(d == 0 for d in tensor.dims):
            raise GGUFFileError(f"{path}: tensor {name} has a zero-sized dimension (shape {list(tensor.dims)[::-1]})")


def _is_epsilon_key(key: str) -> bool:
    return key.endswith(("_epsilon", "norm_eps"))


def _check_epsilons(path: Path, header: GGUFHeader) -> None:
    # a NaN or negative norm epsilon aborts llama.cpp at the first eval: GGML_ASSERT(eps >= 0.0f)
    for key in filter(_is_epsilon_key, header.fields):
        value = header.fields[key]
        numbers = header.read_array(key) if isinstance(value, ArrayField) else [value]
        for number in numbers or ():
            if isinstance(number, float) and not (math.isfinite(number) and number > 0):
                raise GGUFFileError(f"{path}: {key} is {number:g}: a norm epsilon must be a finite number above 0")


def _check_byte_tokens(path: Path, header: GGUFHeader, tokenizer_model) -> None:
    # SentencePiece falls back to <0xXX> tokens for text outside its pieces;
    # without them llama.cpp's tokenizer throws std::out_of_range and the process dies
    if tokenizer_model != "llama":
        return
    tokens = header.fields.get("tokenizer.ggml.tokens")
    data = header.array_bytes(tokens) if isinstance(tokens, ArrayField) and tokens.item_type == GGUF_STRING else b""
    length = struct.pack(header.byte_order + "Q", 6)  # each string is its length, then its bytes: found in C
    missing = [f"<0x{b:02X}>" for b in range(256) if data.find(length + f"<0x{b:02X}>".encode()) < 0]
    if missing:
        raise GGUFFileError(
            f"{path}: SentencePiece vocabulary lacks {len(missing)} of the 256 byte tokens (e.g. {missing[0]})"
        )


def file_type_name(file_type) -> str | None:
    """general.file_type as llama.cpp names it: 1 -> "F16", 15 -> "Q4_K_M"."""
    try:
        name = gguf_constants().LlamaFileType(file_type).name
    except (ValueError, TypeError):
        return None
    return name.removeprefix("MOSTLY_").removeprefix("ALL_")


def check_gguf(path: str | Path, header: GGUFHeader | None = None) -> GGUFInfo:
    """Check a GGUF file (or its header, already read); return what the backends need. Reads the
    header and the tensor table only: the vocabulary is walked past, never decoded."""
    path = Path(path)
    header = header if header is not None else read_header(path)
    fields = header.fields
    architecture = fields.get("general.architecture")
    if not isinstance(architecture, str):
        raise GGUFFileError(f"{path}: no general.architecture: not a model file")
    if fields.get("general.type") == "adapter":
        raise GGUFFileError(f"{path}: a LoRA adapter, not a model")
    known = set(gguf_constants().MODEL_ARCH_NAMES.values())
    if architecture not in known:
        raise GGUFFileError(f"{path}: architecture {architecture!r} is not one llama.cpp runs")
    tensors = {t.name: t for t in header.tensors}
    if not tensors:
        raise GGUFFileError(f"{path}: has no tensors: not a model file")
    tokenizer_model = fields.get("tokenizer.ggml.model")
    _check_no_empty_tensor(path, tensors)
    _check_epsilons(path, header)
    _check_byte_tokens(path, header, tokenizer_model)
    chat_format_version = fields.get(CHATAPP_KEY)
    chatapp = chat_format_version is not None
    if architecture == "gpt2":
        _check_gpt2(path, header, tensors)
    if chatapp:
        if architecture != "gpt2":
            raise GGUFFileError(f"{path}: marked as a chatapp model but its architecture is {architecture!r}")
        if not isinstance(chat_format_version, int) or chat_format_version > SUPPORTED_CHAT_FORMAT:
            raise GGUFFileError(
                f"{path}: chat format version {chat_format_version} is newer than this chatapp understands"
            )
    context = fields.get(f"{architecture}.context_length")
    file_type = fields.get("general.file_type")
    name = fields.get("general.name")
    template = fields.get("tokenizer.chat_template")
    return GGUFInfo(
        path=path,
        size_bytes=header.size,
        version=header.version,
        architecture=architecture,
        name=str(name or path.stem),
        context_length=int(context) if isinstance(context, int) else None,
        n_tensors=len(tensors),
        file_type=file_type if isinstance(file_type, int) else None,
        chat_template=template if isinstance(template, str) else None,
        chatapp=chatapp,
        chat_format_version=chat_format_version if isinstance(chat_format_version, int) else None,
        vocab_size=_vocab_size(header),
        tokenizer_model=tokenizer_model if isinstance(tokenizer_model, str) else None,
        file_type_name=file_type_name(file_type),
        token_types_at=_token_types_at(header),
    )


def _token_types_at(header: GGUFHeader) -> tuple[int, int, str] | None:
    types = header.fields.get("tokenizer.ggml.token_type")
    if not isinstance(types, ArrayField) or types.item_type not in (GGUF_INT32, GGUF_UINT32):
        return None
    return types.start, types.count, ("<" if header.byte_order == "<" else ">") + "i4"


def tensor_types(path: str | Path) -> dict[str, str]:
    """Tensor name -> GGML type name (F32, Q8_0, Q6_K, ...)."""
    kinds = gguf_constants().GGMLQuantizationType
    return {t.name: kinds(t.ggml_type).name for t in read_header(path).tensors}


def chatapp_tokenizer(path: str | Path, header: GGUFHeader | None = None):
    """Our Tokenizer, rebuilt from the vocabulary of a GGUF file chatapp wrote (a few thousand
    tokens: the one vocabulary decoded in Python, and only for our own files)."""
    from quant.gguf_vocab import tokenizer_from_gguf

    header = header if header is not None else read_header(path)
    tokens = header.read_array("tokenizer.ggml.tokens")
    types = header.read_array("tokenizer.ggml.token_type")
    if tokens is None or types is None:
        raise GGUFFileError(f"{path}: no tokenizer vocabulary")
    try:
        return tokenizer_from_gguf(tokens, types)
    except ValueError as error:
        raise GGUFFileError(f"{path}: {error}") from None
