"""Sampling-inspector steps packed into one compact blob per reply.

A step is {"token_id", "text", "rank", "candidates": [{"id", "text", "raw_prob",
"final_prob", "drawn", "cut_by"}]} (model/inference/sampling.py inspection_step).
As JSON that is about 1 KB a token; here each (token id, text) pair is stored
once per reply and every candidate becomes an index, two float16
probabilities and a flag byte, column by column, then zlib: a few bytes per
candidate. Probabilities keep about three significant digits, which is what
the inspector shows. Steps written before token ids, ranks and cut_by existed
come back with -1 and None. A step of a reply's thinking has "thinking": True (the header lists
their indices; a blob without the list has none). A control token written by its name has "control":
True, kept as a list of the token table's indices.
"""

from __future__ import annotations

import json
import struct
import zlib

FORMAT_VERSION = 1
MISSING_ID = -1
DRAWN_FLAG = 1  # bit 0 of a candidate's flag byte; the bits above hold its cut_by code


class _Table:
    """Distinct values in first-seen order, each with its index."""

    def __init__(self) -> None:
        self.values: list = []
        self._index: dict = {}

    def index(self, value) -> int:
        if value not in self._index:
            self._index[value] = len(self.values)
            self.values.append(value)
        return self._index[value]


def _pack(kind: str, values: list) -> bytes:
    return struct.pack(f"<{len(values)}{kind}", *values)


def _unpack(kind: str, data: memoryview, offset: int, count: int) -> tuple[list, int]:
    size = struct.calcsize(f"<{count}{kind}")
    return list(struct.unpack_from(f"<{count}{kind}", data, offset)), offset + size


def encode(steps: list[dict]) -> bytes:
    tokens = _Table()  # (token id, text) pairs
    cut_reasons = _Table()
    cut_reasons.index(None)  # code 0: not cut
    control: set[int] = set()  # indices into `tokens` of control tokens written by their names
    step_tokens, step_ranks, step_sizes = [], [], []
    candidate_tokens, raw_probs, final_probs, flags = [], [], [], []
    for step in steps:
        step_tokens.append(tokens.index((int(step.get("token_id", MISSING_ID)), str(step.get("text", "")))))
        if step.get("control"):
            control.add(step_tokens[-1])
        step_ranks.append(int(step.get("rank", MISSING_ID)))
        candidates = step.get("candidates") or []
        step_sizes.append(len(candidates))
        for candidate in candidates:
            candidate_tokens.append(
                tokens.index((int(candidate.get("id", MISSING_ID)), str(candidate.get("text", ""))))
            )
            if candidate.get("control"):
                control.add(candidate_tokens[-1])
            raw_probs.append(float(candidate.get("raw_prob", 0.0)))
            final_probs.append(float(candidate.get("final_prob", 0.0)))
            cut_code = cut_reasons.index(candidate.get("cut_by"))
            flags.append((cut_code << 1) | (DRAWN_FLAG if candidate.get("drawn") else 0))
    if len(cut_reasons.values) > 127:
        raise ValueError("more than 127 distinct cut_by reasons in one reply")
    header = json.dumps(
        {
            "version": FORMAT_VERSION,
            "steps": len(steps),
            "candidates": len(candidate_tokens),
            "texts": [text for _, text in tokens.values],
            "cut_by": cut_reasons.values,
            "thinking": [index for index, step in enumerate(steps) if step.get("thinking")],
            "control": sorted(control),
        },
        separators=(",", ":"),
    ).encode()
    body = b"".join(
        [
            _pack("i", [token_id for token_id, _ in tokens.values]),
            _pack("I", step_tokens),
            _pack("i", step_ranks),
            _pack("I", step_sizes),
            _pack("I", candidate_tokens),
            _pack("e", raw_probs),
            _pack("e", final_probs),
            _pack("B", flags),
        ]
    )
    return zlib.compress(struct.pack("<I", len(header)) + header + body, 6)


def decode(blob: bytes) -> list[dict]:
    data = memoryview(zlib.decompress(blob))
    (header_size,) = struct.unpack_from("<I", data, 0)
    header = json.loads(bytes(data[4 : 4 + header_size]))
    if header["version"] != FORMAT_VERSION:
        raise ValueError(f"inspection format {header['version']} is not {FORMAT_VERSION}")
    offset = 4 + header_size
    step_count, candidate_count, texts = header["steps"], header["candidates"], header["texts"]
    token_ids, offset = _unpack("i", data, offset, len(texts))
    step_tokens, offset = _unpack("I", data, offset, step_count)
    step_ranks, offset = _unpack("i", data, offset, step_count)
    step_sizes, offset = _unpack("I", data, offset, step_count)
    candidate_tokens, offset = _unpack("I", data, offset, candidate_count)
    raw_probs, offset = _unpack("e", data, offset, candidate_count)
    final_probs, offset = _unpack("e", data, offset, candidate_count)
    flags, offset = _unpack("B", data, offset, candidate_count)
    cut_reasons = header["cut_by"]
    thinking = set(header.get("thinking", ()))
    control = set(header.get("control", ()))

    def token_entry(index: int) -> dict:
        return {"text": texts[index], "control": True} if index in control else {"text": texts[index]}

    steps: list[dict] = []
    next_candidate = 0
    for token, rank, size in zip(step_tokens, step_ranks, step_sizes):
        candidates = []
        for position in range(next_candidate, next_candidate + size):
            index, flag = candidate_tokens[position], flags[position]
            candidates.append(
                {
                    "id": token_ids[index],
                    **token_entry(index),
                    "raw_prob": raw_probs[position],
                    "final_prob": final_probs[position],
                    "drawn": bool(flag & DRAWN_FLAG),
                    "cut_by": cut_reasons[flag >> 1],
                }
            )
        next_candidate += size
        step = {"token_id": token_ids[token], **token_entry(token), "rank": rank, "candidates": candidates}
        if len(steps) in thinking:
            step["thinking"] = True
        steps.append(step)
    return steps
