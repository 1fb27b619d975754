"""Replies decoded while the torch engine compiles its decode step in the background: how long
each takes, against the same replies with no compile, and when the compile ends. With a cold
compile cache (a fresh temporary folder), one thread.

    .venv/bin/python scripts/bench_compile_interference.py [MODEL] [--constant]

--constant decodes back to back until the compile is done (a busy server) instead of one
reply every 1.5 s (a person chatting).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="chatapp-cold-compile-")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chatapp.models.resolve import resolve_model  # noqa: E402
from model.inference.sampling import SamplingParams  # noqa: E402
from model.inference.torch_engine import TorchEngine  # noqa: E402
from model.text.chat_format import Message  # noqa: E402

PROMPT = [Message("user", "Good morrow, what news from the court?")]


def reply(engine: TorchEngine, seed: int) -> tuple[int, float]:
    started, pieces = time.perf_counter(), 0
    for event in engine.chat(PROMPT, SamplingParams(max_tokens=60, seed=seed, temperature=0.8)):
        pieces += hasattr(event, "text")
    return pieces, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="shakespeare-chat")
    parser.add_argument("--constant", action="store_true", help="decode back to back until the compile ends")
    args = parser.parse_args()
    folder = resolve_model(args.model).path
    eager = TorchEngine.load(folder, device="cpu", compile="off")
    baseline = [reply(eager, seed) for seed in range(6)]
    engine = TorchEngine.load(folder, device="cpu", compile="on")
    started, during, seed = time.perf_counter(), [], 0
    while engine.compile_status == "compiling":
        during.append(reply(engine, seed))
        seed += 1
        if not args.constant:
            time.sleep(1.5)
    ended = time.perf_counter() - started
    print(
        f"compile: {engine.compile_status} after {ended:.1f} s "
        f"({'constant decoding' if args.constant else 'a reply every 1.5 s'})"
    )
    print(f"replies during the compile: {len(during)}, {per_piece(during)}")
    print(f"the same replies, no compile: {per_piece(baseline)}")


def per_piece(runs: list[tuple[int, float]]) -> str:
    times = sorted(seconds / max(pieces, 1) * 1000 for pieces, seconds in runs)
    return f"median {statistics.median(times):.1f} ms per piece, slowest {times[-1]:.1f}"


if __name__ == "__main__":
    main()
