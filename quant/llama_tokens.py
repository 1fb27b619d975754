"""Text to token ids through llama.cpp's own tokenizer, with a buffer sized to the text.

llama-cpp-python's Llama.tokenize allocates one int32 per position of the file's
trained context on every call: 8 GB for a file that claims 2**31-1 tokens, an
error ("Array length must be >= 0") for 2**32-1, and a megabyte per call for a
real 262,144-token model, which made tokenizing a long paste piece by piece slow.
A token covers at least one byte of the text, so len(text) + 2 ids always suffice
(the 2: a BOS, and SentencePiece's space prefix).
"""

from __future__ import annotations

from typing import Any


def tokenize(vocab: Any, data: bytes, add_special: bool = False, parse_special: bool = False) -> list[int]:
    """`data` as token ids: `vocab` is llama_cpp.llama_model_get_vocab(model)."""
    import llama_cpp

    if not data:
        return []
    size = len(data) + 2
    buffer = (llama_cpp.llama_token * size)()
    count = llama_cpp.llama_tokenize(vocab, data, len(data), buffer, size, add_special, parse_special)
    if count < 0:  # cannot happen by the rule above; asked again with the size llama.cpp names
        size = -count
        buffer = (llama_cpp.llama_token * size)()
        count = llama_cpp.llama_tokenize(vocab, data, len(data), buffer, size, add_special, parse_special)
        if count < 0:
            raise RuntimeError(f"llama.cpp could not tokenize {len(data)} bytes")
    return list(buffer[:count])
