"""Conversations for fine-tuning: the user's JSONL file, token ids with a loss
mask, and padded batches.

A JSONL file holds one conversation per line in the common shape
    {"messages": [{"role": "system" | "user" | "assistant", "content": "..."}]}
and every problem is reported with its line number.

The loss counts only what the model should learn to say: the text of each
assistant message and the <|end|> that closes it. The prompt (system and user
messages, role markers) is context, masked out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from model.text.chat_format import ROLES, Message, encode_message
from model.text.tokenizer import Tokenizer

MIN_PROMPT_TOKENS = 8  # a user message cut to fit keeps at least this many of its last tokens


class ChatDataError(ValueError):
    """A conversations file that cannot be used; the message names the line."""


@dataclass
class Example:
    ids: list[int]
    mask: list[int]  # 1 where the token is one the model should learn to produce

    def __len__(self) -> int:
        return len(self.ids)


# --- reading JSONL ---


def conversation_problem(record) -> str | None:
    """What is wrong with one parsed line, or None."""
    if not isinstance(record, dict) or not isinstance(record.get("messages"), list):
        return 'expected an object with a "messages" list'
    messages = record["messages"]
    if not messages:
        return '"messages" is empty'
    for number, message in enumerate(messages, 1):
        if not isinstance(message, dict):
            return f'message {number}: expected an object with "role" and "content"'
        if message.get("role") not in ROLES:
            return f'message {number}: "role" must be one of {", ".join(ROLES)}, not {message.get("role")!r}'
        if not isinstance(message.get("content"), str):
            return f'message {number}: "content" must be a string'
        if message["role"] == "system" and number > 1:
            return f"message {number}: a system message may only come first"
    if not any(m["role"] == "assistant" for m in messages):
        return "no assistant message to learn from"
    return None


def read_jsonl(path: str | Path) -> list[list[Message]]:
    """Conversations from a JSONL file; ChatDataError names the first bad line."""
    path = Path(path)
    if not path.is_file():
        raise ChatDataError(f"{path}: no such file")
    conversations, problems = [], []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line_number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                problems.append(f"{path}:{line_number}: not valid JSON ({error.msg} at column {error.colno})")
                continue
            problem = conversation_problem(record)
            if problem:
                problems.append(f"{path}:{line_number}: {problem}")
                continue
            conversations.append([Message(m["role"], m["content"]) for m in record["messages"]])
    if problems:
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise ChatDataError(problems[0] + more)
    if not conversations:
        raise ChatDataError(f"{path}: no conversations in this file")
    return conversations


def hold_out_last(conversations: list, validation_fraction: float = 0.05) -> tuple[list, list]:
    """The last 5% held out for validation (none when there are fewer than 20)."""
    if len(conversations) < 20:
        return conversations, []
    cut = len(conversations) - max(1, int(len(conversations) * validation_fraction))
    return conversations[:cut], conversations[cut:]


# --- token ids and the loss mask ---


def encode_conversation(messages: list[Message], tokenizer: Tokenizer) -> Example:
    """The ids of the chat format (as render_ids, without a generation prompt);
    the mask is 1 on assistant text and the <|end|> closing it."""
    ids, mask = [], []
    for message in messages:
        encoded = encode_message(message, tokenizer)
        ids += encoded
        learn = 1 if message.role == "assistant" else 0
        mask += [0] + [learn] * (len(encoded) - 1)  # the role marker is given, not learned
    return Example(ids, mask)


def fit_example(
    messages: list[Message], tokenizer: Tokenizer, max_tokens: int, max_reply_tokens: int
) -> Example | None:
    """The conversation within max_tokens: oldest turns dropped, then the first
    user message cut from the front. None when a reply is longer than
    max_reply_tokens or the last exchange cannot fit."""
    system = [m for m in messages[:1] if m.role == "system"]
    turns = messages[len(system) :]
    if any(m.role == "assistant" and len(tokenizer.encode(m.content)) > max_reply_tokens for m in turns):
        return None
    while turns:
        example = encode_conversation(system + turns, tokenizer)
        if len(example) <= max_tokens:
            return example if any(example.mask) else None
        later_user = next((i for i, m in enumerate(turns) if i > 0 and m.role == "user"), None)
        if later_user is None or not any(m.role == "assistant" for m in turns[later_user:]):
            return cut_first_message(system, turns, tokenizer, max_tokens)
        turns = turns[later_user:]
    return None


def cut_first_message(
    system: list[Message], turns: list[Message], tokenizer: Tokenizer, max_tokens: int
) -> Example | None:
    first, rest = turns[0], turns[1:]
    if first.role != "user":
        return None
    example = encode_conversation(system + turns, tokenizer)
    content = tokenizer.encode(first.content)
    keep = len(content) - (len(example) - max_tokens)
    if keep < MIN_PROMPT_TOKENS:
        return None
    cut = Message("user", tokenizer.decode(content[len(content) - keep :]))
    example = encode_conversation(system + [cut] + rest, tokenizer)
    return example if len(example) <= max_tokens else None


def encode_all(
    conversations, tokenizer: Tokenizer, max_tokens: int, max_reply_tokens: int
) -> tuple[list[Example], int]:
    """Examples for every conversation that fits, and how many were left out."""
    examples = []
    for messages in conversations:
        example = fit_example(list(messages), tokenizer, max_tokens, max_reply_tokens)
        if example is not None:
            examples.append(example)
    return examples, len(conversations) - len(examples)


# --- batches ---


def make_batch(examples: list[Example], pad_id: int):
    """Inputs, targets and loss mask, right-padded to the longest example."""
    import torch

    length = max(len(e) for e in examples) - 1
    x = torch.full((len(examples), length), pad_id, dtype=torch.long)
    y = torch.full((len(examples), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), length), dtype=torch.float32)
    for row, example in enumerate(examples):
        n = len(example) - 1
        x[row, :n] = torch.tensor(example.ids[:-1])
        y[row, :n] = torch.tensor(example.ids[1:])
        mask[row, :n] = torch.tensor(example.mask[1:], dtype=torch.float32)
    return x, y, mask
