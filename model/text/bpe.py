"""Training a byte-level BPE vocabulary by iterative byte-pair merging.

Pairs are counted over the unique pre-tokenized words (GPT-2's regex) weighted
by frequency, and after each merge only the words that contain the merged pair
are recounted, so the whole corpus trains in seconds, not hours.

`reference_encode` applies the learned merges in rank order, the textbook way;
the tests check that tiktoken (which the app uses) gives the same ids.
"""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict

import regex

from model.text.tokenizer import GPT2_SPLIT_PATTERN, SPECIAL_TOKENS

_split = regex.compile(GPT2_SPLIT_PATTERN)


def count_words(texts: list[str]) -> Counter[bytes]:
    words: Counter[bytes] = Counter()
    for text in texts:
        words.update(piece.encode("utf-8") for piece in _split.findall(text))
    return words


def _pairs(word: list[int]) -> Counter[tuple[int, int]]:
    return Counter(zip(word, word[1:]))


def _merge_word(word: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    merged, i = [], 0
    while i < len(word):
        if i + 1 < len(word) and word[i] == pair[0] and word[i + 1] == pair[1]:
            merged.append(new_id)
            i += 2
        else:
            merged.append(word[i])
            i += 1
    return merged


def train_bpe(texts: list[str], n_ranks: int) -> dict[bytes, int]:
    """Learn ranks (256 single bytes, then merges) up to n_ranks tokens.

    Ties between equally frequent pairs go to the pair with the smaller ids,
    so training is deterministic.
    """
    if n_ranks < 256:
        raise ValueError("n_ranks must be at least 256 (the single bytes)")
    word_counts = count_words(texts)
    words = [list(word) for word in word_counts]
    freqs = list(word_counts.values())
    token_bytes = [bytes([b]) for b in range(256)]
    forbidden = {s.encode() for s in SPECIAL_TOKENS}

    pair_counts: Counter[tuple[int, int]] = Counter()
    pair_words: dict[tuple[int, int], set[int]] = defaultdict(set)
    for index, (word, freq) in enumerate(zip(words, freqs)):
        for pair, n in _pairs(word).items():
            pair_counts[pair] += n * freq
            pair_words[pair].add(index)
    heap = [(-count, pair) for pair, count in pair_counts.items()]
    heapq.heapify(heap)

    while len(token_bytes) < n_ranks and heap:
        negative_count, pair = heapq.heappop(heap)
        if pair_counts.get(pair, 0) != -negative_count or negative_count == 0:
            continue  # stale entry: the count changed since it was pushed
        new_bytes = token_bytes[pair[0]] + token_bytes[pair[1]]
        if new_bytes in forbidden:
            del pair_counts[pair]
            continue
        new_id = len(token_bytes)
        token_bytes.append(new_bytes)
        changed: set[tuple[int, int]] = set()
        for index in pair_words.pop(pair):
            old = words[index]
            new = _merge_word(old, pair, new_id)
            freq = freqs[index]
            for p, n in _pairs(old).items():
                pair_counts[p] -= n * freq
                changed.add(p)
            for p, n in _pairs(new).items():
                pair_counts[p] += n * freq
                pair_words[p].add(index)
                changed.add(p)
            words[index] = new
        for p in changed:
            count = pair_counts.get(p, 0)
            if count > 0:
                heapq.heappush(heap, (-count, p))
            else:
                pair_counts.pop(p, None)
    return {token: rank for rank, token in enumerate(token_bytes)}


def reference_encode(text: str, ranks: dict[bytes, int]) -> list[int]:
    """Encode by applying merges in rank order: the trainer's own semantics."""
    ids: list[int] = []
    for piece in _split.findall(text):
        parts = [bytes([b]) for b in piece.encode("utf-8")]
        while len(parts) > 1:
            best_rank, best_at = None, -1
            for i in range(len(parts) - 1):
                rank = ranks.get(parts[i] + parts[i + 1])
                if rank is not None and (best_rank is None or rank < best_rank):
                    best_rank, best_at = rank, i
            if best_rank is None:
                break
            parts[best_at : best_at + 2] = [parts[best_at] + parts[best_at + 1]]
        ids.extend(ranks[p] for p in parts)
    return ids
