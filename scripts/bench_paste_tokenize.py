"""How a long paste's cost grows with its length, for a foreign GGUF whose vocabulary has
user-defined tokens (Gemma's runs of newlines and spaces, which llama.cpp matches even in plain
text): encoding 1,000 to 64,000 lines must grow linearly (issue 25, item 12).

    python scripts/bench_paste_tokenize.py [LINES ...]

Prints, for each size, the ids, the seconds and the seconds per 1,000 lines; a linear cost keeps
the last column flat (it was quadratic: 1,000 lines 4.9 s, 2,000 19.2 s).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import gguf  # noqa: E402

from tests.helpers import foreign_gguf  # noqa: E402

USER_DEFINED = tuple("\n" * k for k in range(2, 32)) + tuple(" " * k for k in range(2, 32))
USER_DEFINED += tuple(f"<unused{i}>" for i in range(2000))  # a real Gemma has thousands


def gemma_with_user_defined_tokens(path: Path) -> Path:
    plain = foreign_gguf.sentencepiece_vocabulary

    def with_user_defined(with_byte_tokens=True):
        vocabulary = plain(with_byte_tokens)
        vocabulary.tokens.extend(USER_DEFINED)
        vocabulary.types.extend([int(gguf.TokenType.USER_DEFINED)] * len(USER_DEFINED))
        if vocabulary.scores is not None:
            vocabulary.scores.extend([0.0] * len(USER_DEFINED))
        return vocabulary

    foreign_gguf.sentencepiece_vocabulary = with_user_defined
    try:
        return foreign_gguf.write_foreign_gguf(path, "gemma", context_length=1_000_000)
    finally:
        foreign_gguf.sentencepiece_vocabulary = plain


def main(sizes: list[int]) -> None:
    from quant.llama_engine import LlamaEngine

    with tempfile.TemporaryDirectory() as folder:
        engine = LlamaEngine.load(gemma_with_user_defined_tokens(Path(folder) / "gemma-ud.gguf"))
        vocab = engine.prompt_format.vocab
        print(f"load average {os.getloadavg()[0]:.2f}")
        print(f"{'lines':>7} {'ids':>9} {'seconds':>8} {'s per 1k lines':>15}")
        for lines in sizes:
            text = "\n\n".join(f"line {i} of the paste" for i in range(lines))
            started = time.perf_counter()
            ids = vocab.encode(text)
            seconds = time.perf_counter() - started
            print(f"{lines:>7,} {len(ids):>9,} {seconds:>8.3f} {seconds / lines * 1000:>15.3f}")
        engine.close()


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [1000, 2000, 4000, 8000, 16000, 32000, 64000])
