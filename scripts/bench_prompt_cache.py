"""First-token time coming back to a long conversation, against computing its prompt cold.

    python scripts/bench_prompt_cache.py [--tokens 2000] [--repeats 3] [FILE.gguf]

Through the llama.cpp worker, as the app runs it, greedy, one new user message each time:
- cold: the conversation's whole prompt computed (the KV state cache off);
- back, same run: the conversation, another one, then the conversation again with a new message
  (its state comes from the in-memory cache);
- after a restart: a new worker process, the same cache folder (its state comes from disk).
Without a file: the 262,144-token Gemma-layout file of scripts/bench_cold_start.py (context 4096).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

from model.inference.sampling import SamplingParams  # noqa: E402
from model.text.chat_format import Message  # noqa: E402
from quant.llama_worker import WorkerBackend  # noqa: E402

WORDS = "thou art the sun and moon of my days speak gently for the night is long and full of stars".split()
GREEDY = SamplingParams(temperature=0.0, max_tokens=2, seed=0)


def conversation(backend, tokens: int, seed: int) -> list[Message]:
    """Pairs of turns (user, assistant) of plain words until the prompt is about `tokens` long."""
    messages: list[Message] = []
    turn = 0
    while len(backend.fit(messages + [Message("user", "?")], reserve=16).ids) < tokens:
        for role in ("user", "assistant"):
            words = [WORDS[(seed * 7 + turn * 13 + i * 5) % len(WORDS)] for i in range(60)]
            messages.append(Message(role, " ".join(words)))
            turn += 1
    return messages


def first_token_s(backend, messages: list[Message]) -> tuple[float, int]:
    finished = None
    for event in backend.chat(messages, GREEDY):
        finished = event
    return finished.time_to_first_token_s, finished.prefilled_tokens  # type: ignore[union-attr]


def load() -> str:
    with open("/proc/loadavg") as f:
        return ", ".join(f.read().split()[:3])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", nargs="?", type=Path)
    parser.add_argument("--tokens", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        path = args.file
        if path is None:
            folder = args.keep or Path(scratch)
            folder.mkdir(parents=True, exist_ok=True)
            script = ROOT / "scripts" / "bench_cold_start.py"
            subprocess.run([sys.executable, str(script), "--write-files", str(folder)], check=True, cwd=ROOT)
            path = folder / "gemma-262k-q8_0.gguf"
        logs = Path(scratch) / "logs"
        print(f"# prompt cache: {path.name}, load average {load()} at start; {os.cpu_count()} cores")
        results: dict[str, list[float]] = {"cold": [], "back, same run": [], "after a restart": []}
        prefilled: dict[str, list[int]] = {key: [] for key in results}
        for repeat in range(args.repeats):
            states = Path(scratch) / f"states{repeat}"
            cold = WorkerBackend(path, log_dir=logs, state_cache_mb=0)
            warm = WorkerBackend(path, log_dir=logs, state_cache_dir=str(states))
            try:
                messages = conversation(cold, args.tokens, repeat)
                other = conversation(cold, args.tokens // 4, repeat + 100)
                coming_back = messages + [Message("user", f"and what of the stars, {repeat}?")]
                seconds, n = first_token_s(cold, coming_back)
                results["cold"].append(seconds)
                prefilled["cold"].append(n)
                first_token_s(warm, messages)
                first_token_s(warm, other)
                seconds, n = first_token_s(warm, coming_back)
                results["back, same run"].append(seconds)
                prefilled["back, same run"].append(n)
            finally:
                cold.close()
                warm.close()
            restarted = WorkerBackend(path, log_dir=logs, state_cache_dir=str(states))
            try:
                seconds, n = first_token_s(restarted, coming_back + [Message("assistant", "x"), Message("user", "y")])
                results["after a restart"].append(seconds)
                prefilled["after a restart"].append(n)
            finally:
                restarted.close()
        cold_s = statistics.median(results["cold"])
        print(f"| {path.name}, ~{args.tokens}-token conversation | first token s | vs cold | prompt tokens computed |")
        print("|---|---|---|---|")
        for key, values in results.items():
            median = statistics.median(values)
            print(f"| {key} | {median:.3f} | {median / cold_s:.0%} | {statistics.median(prefilled[key]):.0f} |")
        print(f"# load average {load()} at the end; medians of {args.repeats}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
