"""The byte-level BPE tokenizer at run time: our ranks, encoded by tiktoken.

The ranks file is tiktoken's format (one `base64(token bytes) rank` per line).
Special tokens are not in the file: they take the ids right after the ranks,
in the order of SPECIAL_TOKENS. Text is always encoded as plain text, so a
user who types `<|end|>` gets the ordinary tokens for those characters; the
special ids are only ever inserted by code (the chat format).

Lone surrogates (which cannot be UTF-8) are encoded as U+FFFD, so
decode(encode(s)) == s for every string without them.
"""

from __future__ import annotations

import base64
from pathlib import Path

# GPT-2's pre-tokenization regex, as tiktoken's "gpt2" encoding spells it.
GPT2_SPLIT_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

END_OF_TEXT = "<|endoftext|>"
SYSTEM = "<|system|>"
USER = "<|user|>"
ASSISTANT = "<|assistant|>"
END_OF_TURN = "<|end|>"
SPECIAL_TOKENS = (END_OF_TEXT, SYSTEM, USER, ASSISTANT, END_OF_TURN)

TOKENIZER_FILE = "tokenizer.tiktoken"


def save_ranks(ranks: dict[bytes, int], path: str | Path) -> None:
    lines = [
        f"{base64.b64encode(token).decode('ascii')} {rank}"
        for token, rank in sorted(ranks.items(), key=lambda kv: kv[1])
    ]
    Path(path).write_text("\n".join(lines) + "\n", encoding="ascii")


def load_ranks(path: str | Path) -> dict[bytes, int]:
    """Read a tiktoken ranks file; raise ValueError naming the file on damage."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: tokenizer file is missing")
    ranks: dict[bytes, int] = {}
    for line_number, line in enumerate(path.read_text(encoding="ascii", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token, validate=True)] = int(rank)
        except ValueError as error:
            raise ValueError(f"{path}: line {line_number} is not 'base64 rank' ({error})") from None
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise ValueError(f"{path}: ranks are not 0..{len(ranks) - 1} without gaps")
    if any(bytes([b]) not in ranks for b in range(256)):
        raise ValueError(f"{path}: not byte-level (some of the 256 single bytes have no rank)")
    return ranks


def replace_lone_surrogates(text: str) -> str:
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


class Tokenizer:
    """Encodes plain text with tiktoken; knows the special token ids."""

    def __init__(self, ranks: dict[bytes, int], name: str = "chatapp-bpe"):
        clashes = [text for text in SPECIAL_TOKENS if text.encode() in ranks]
        if clashes:
            raise ValueError(f"learned tokens collide with special tokens: {clashes}")
        self.ranks = ranks
        self.special_ids = {text: len(ranks) + i for i, text in enumerate(SPECIAL_TOKENS)}
        import tiktoken  # here: a llama.cpp run of a GGUF file never builds our tokenizer, nor pays for the import

        self.encoding = tiktoken.Encoding(
            name=name,
            pat_str=GPT2_SPLIT_PATTERN,
            mergeable_ranks=ranks,
            special_tokens=self.special_ids,
        )

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        return cls(load_ranks(path))

    def save(self, path: str | Path) -> None:
        save_ranks(self.ranks, path)

    @property
    def vocab_size(self) -> int:
        return len(self.ranks) + len(SPECIAL_TOKENS)

    @property
    def end_of_text_id(self) -> int:
        return self.special_ids[END_OF_TEXT]

    @property
    def end_of_turn_id(self) -> int:
        return self.special_ids[END_OF_TURN]

    def encode(self, text: str) -> list[int]:
        """Plain text to ids: special-token text is never a special token."""
        return self.encoding.encode_ordinary(replace_lone_surrogates(text))

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self.encoding.encode_ordinary_batch([replace_lone_surrogates(t) for t in texts])

    def token_bytes(self, token_id: int) -> bytes:
        return self.encoding.decode_single_token_bytes(token_id)

    def decode_bytes(self, ids: list[int]) -> bytes:
        return self.encoding.decode_bytes(ids)

    def decode(self, ids: list[int]) -> str:
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def is_special(self, token_id: int) -> bool:
        return token_id >= len(self.ranks)
