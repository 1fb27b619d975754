"""Our tokenizer as llama.cpp's "gpt2" BPE vocabulary, and back.

Token strings are the token bytes mapped through GPT-2's bytes_to_unicode
table (every byte becomes one printable character). llama.cpp merges by a
list of pairs in priority order, tiktoken by the rank of the merged bytes; the
merges are rebuilt from the ranks: for each multi-byte token in rank order,
BPE with the ranks below it splits its bytes into exactly two parts, and that
pair is its merge. Special tokens go in as their raw text, type CONTROL.
"""

from __future__ import annotations

from dataclasses import dataclass

from model.text.byte_level import token_bytes, token_string
from model.text.tokenizer import SPECIAL_TOKENS, Tokenizer

TOKEN_NORMAL, TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNUSED = 1, 3, 4, 5


def split_in_two(token: bytes, ranks: dict[bytes, int]) -> tuple[bytes, bytes] | None:
    """The two parts BPE (with the ranks below the token's) joins into `token`."""
    limit = ranks[token]
    parts = [token[i : i + 1] for i in range(len(token))]
    while len(parts) > 2:
        best_rank, best_at = None, -1
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1])
            if rank is not None and rank < limit and (best_rank is None or rank < best_rank):
                best_rank, best_at = rank, i
        if best_rank is None:
            return None  # BPE never builds this token: it needs no merge
        parts[best_at : best_at + 2] = [parts[best_at] + parts[best_at + 1]]
    return (parts[0], parts[1]) if len(parts) == 2 else None


def merges_from_ranks(ranks: dict[bytes, int]) -> list[str]:
    merges = []
    for token, _ in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) < 2:
            continue
        pair = split_in_two(token, ranks)
        if pair is not None:
            merges.append(f"{token_string(pair[0])} {token_string(pair[1])}")
    return merges


@dataclass
class GGUFVocab:
    tokens: list[str]
    token_types: list[int]
    merges: list[str]
    bos_id: int
    eos_id: int
    eot_id: int
    pad_id: int


def vocab_for_gguf(tokenizer: Tokenizer) -> GGUFVocab:
    n_ranks = len(tokenizer.ranks)
    by_id = sorted(tokenizer.ranks.items(), key=lambda kv: kv[1])
    tokens = [token_string(token) for token, _ in by_id] + list(SPECIAL_TOKENS)
    types = [TOKEN_NORMAL] * n_ranks + [TOKEN_CONTROL] * len(SPECIAL_TOKENS)
    if len(set(tokens)) != len(tokens):
        raise ValueError(
            "two tokens have the same text in the GGUF vocabulary (a learned token equals a special token)"
        )
    return GGUFVocab(
        tokens=tokens,
        token_types=types,
        merges=merges_from_ranks(tokenizer.ranks),
        bos_id=tokenizer.end_of_text_id,
        eos_id=tokenizer.end_of_text_id,
        eot_id=tokenizer.end_of_turn_id,
        pad_id=tokenizer.end_of_text_id,
    )


def tokenizer_from_gguf(tokens: list[str], token_types: list[int]) -> Tokenizer:
    """Our Tokenizer back from the vocabulary of a GGUF file that we wrote."""
    n_ranks = len(tokens) - len(SPECIAL_TOKENS)
    if n_ranks < 256 or tuple(tokens[n_ranks:]) != SPECIAL_TOKENS:
        raise ValueError("the vocabulary does not end with chatapp's special tokens")
    if any(t != TOKEN_NORMAL for t in token_types[:n_ranks]):
        raise ValueError("the vocabulary has non-normal tokens before the special tokens")
    try:
        ranks = {token_bytes(text): rank for rank, text in enumerate(tokens[:n_ranks])}
    except KeyError:
        raise ValueError("the vocabulary has a token that is not byte-level") from None
    if len(ranks) != n_ranks:
        raise ValueError("the vocabulary has duplicate tokens")
    return Tokenizer(ranks)
