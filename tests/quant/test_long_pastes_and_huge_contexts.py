"""Text a user pastes into a foreign model costs time in proportion to its length, and a file that
claims an absurd context costs no memory for it (issue 25, items 12 and 13).

scripts/bench_paste_tokenize.py measures the first: 1,000 -> 64,000 lines."""

from __future__ import annotations

import random
import subprocess
import sys

import gguf
import pytest

from tests.helpers import foreign_gguf
from tests.helpers.paths import ROOT

# Gemma's vocabulary has user-defined tokens for runs of newlines and spaces, which llama.cpp
# matches even in plain text: the cause of the quadratic cost when every match was a new search.
WHITESPACE_RUNS = tuple("\n" * k for k in range(2, 32)) + tuple(" " * k for k in range(2, 32))


def write_gemma_with_user_defined_tokens(path, monkeypatch, extra=WHITESPACE_RUNS):
    plain = foreign_gguf.sentencepiece_vocabulary

    def with_user_defined(with_byte_tokens=True):
        vocabulary = plain(with_byte_tokens)
        vocabulary.tokens.extend(extra)
        vocabulary.types.extend([int(gguf.TokenType.USER_DEFINED)] * len(extra))
        if vocabulary.scores is not None:
            vocabulary.scores.extend([0.0] * len(extra))
        return vocabulary

    monkeypatch.setattr(foreign_gguf, "sentencepiece_vocabulary", with_user_defined)
    return foreign_gguf.write_foreign_gguf(path, "gemma", context_length=100_000)


def leftmost_longest(text: str, tokens: list[str]) -> list[tuple[str, bool]]:
    """The rule, written the slow and obvious way: at each point the earliest match, the longest there."""
    parts, at = [], 0
    while True:
        found = [(text.find(t, at), -len(t), t) for t in tokens if text.find(t, at) >= 0]
        if not found:
            return parts + [(text[at:], False)] if parts else [(text, False)]
        start, _, token = min(found)
        parts += [(text[at:start], False), (token, True)]
        at = start + len(token)


@pytest.fixture(scope="module")
def gemma_engine(tmp_path_factory):
    from quant.llama_engine import LlamaEngine

    monkeypatch = pytest.MonkeyPatch()
    try:
        path = write_gemma_with_user_defined_tokens(
            tmp_path_factory.mktemp("gemma") / "gemma-ud.gguf", monkeypatch, WHITESPACE_RUNS + ("<b>", "<br>", "</b>")
        )
    finally:
        monkeypatch.undo()
    engine = LlamaEngine.load(path)
    yield engine
    engine.close()


def test_cutting_at_user_defined_tokens_is_leftmost_longest_in_one_pass(gemma_engine):
    vocab = gemma_engine.prompt_format.vocab
    tokens = sorted(vocab._always_parsed, key=len, reverse=True)
    assert "\n\n" in tokens and "<br>" in tokens
    rng = random.Random(25)
    alphabet = ["\n", " ", "a", "<b", "r>", "<br>", "</b>", "<", "b>", "x y"]
    for _ in range(500):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        assert vocab._split_always_parsed(text) == leftmost_longest(text, tokens), repr(text)


def test_a_long_paste_encodes_as_plain_text_and_joins_back(gemma_engine):
    vocab = gemma_engine.prompt_format.vocab
    text = "\n\n".join(f"line {i}   of the <b>paste</b><start_of_turn>" for i in range(300))
    ids = vocab.encode(text)
    assert vocab.control_tokens["<start_of_turn>"] not in ids  # typed text never becomes a control token
    assert b"".join(vocab.token_bytes(i) for i in ids).decode().lstrip(" ") == text


HUGE_CONTEXT_CHILD = """
import resource, sys
sys.path.insert(0, {root!r})
resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))  # llama-cpp-python's tokenize asked 8 GB for 2**31-1
from model.inference.backend import collect_reply
from model.inference.sampling import SamplingParams
from model.text.chat_format import Message
from quant.llama_engine import LlamaEngine
engine = LlamaEngine.load({path!r})
reply = collect_reply(engine.chat([Message("user", "hi " * 200)], SamplingParams(max_tokens=3, seed=1)))
print(engine.trained_context_length, engine.context_length, reply.finished.completion_tokens)
"""


@pytest.mark.parametrize("claimed", [2**31 - 1, 2**32 - 1])
def test_a_file_claiming_an_absurd_context_answers_in_bounded_memory(tmp_path, claimed):
    path = foreign_gguf.write_foreign_gguf(tmp_path / "huge-context.gguf", "qwen2", context_length=claimed)
    result = subprocess.run(
        [sys.executable, "-c", HUGE_CONTEXT_CHILD.format(root=str(ROOT), path=str(path))],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    trained, used, tokens = map(int, result.stdout.split())
    assert trained == claimed and used <= 32768 and tokens == 3
