"""Token streams for training and evaluation: works joined by <|endoftext|>."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model import DATA_DIR
from model.text.tokenizer import Tokenizer
from model.training.corpus import Work, builtin_split, read_works, split_works

BUILTIN_TOKENIZER = DATA_DIR / "shakespeare-4096.tiktoken"


@dataclass
class TokenStream:
    ids: np.ndarray  # int64, works separated by <|endoftext|>
    n_chars: int  # characters of text encoded (separators not counted)


def encode_works(works: list[Work], tokenizer: Tokenizer) -> TokenStream:
    pieces, n_chars = [], 0
    for ids in tokenizer.encode_batch([w.text for w in works]):
        pieces.append(ids)
        pieces.append([tokenizer.end_of_text_id])
    n_chars = sum(len(w.text) for w in works)
    flat = np.fromiter((i for piece in pieces for i in piece), dtype=np.int64)
    return TokenStream(flat, n_chars)


def load_split(data: str | Path | None = None):
    """Train and validation works: the built-in corpus, or the user's text."""
    return builtin_split() if data is None else split_works(read_works(data))
