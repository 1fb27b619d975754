"""GPT-2's byte-level token text: every byte as one printable character.

How byte-level vocabularies write tokens (GGUF's "gpt2" tokenizer, Hugging
Face's vocab.json and tokenizer.json): a token's bytes mapped through
`bytes_to_unicode`. Torch-free.
"""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


@lru_cache(maxsize=1)
def unicode_to_bytes() -> dict[str, int]:
    return {c: b for b, c in bytes_to_unicode().items()}


def token_string(token: bytes) -> str:
    """A token's bytes as byte-level text."""
    table = bytes_to_unicode()
    return "".join(table[b] for b in token)


def token_bytes(text: str) -> bytes:
    """Byte-level text back to the token's bytes (KeyError: not byte-level text)."""
    table = unicode_to_bytes()
    return bytes(table[c] for c in text)
