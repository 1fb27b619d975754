"""Decode speed with 1, 2, ... threads, on an idle machine and with one core kept busy by another process.

    python scripts/bench_threads_under_load.py [--threads 1 2] [--repeats 2] [FILE.gguf ...]

For each file and thread count: `chatapp bench --no-compare` (the worker process, greedy decoding)
once with nothing else started, once while a `python -c "while True: pass"` process keeps a core busy;
alternating, so the machine's other load hits both alike. Prints decode tok/s idle, busy, and their
ratio; the default (model/inference/threads.py) is marked. Without files: the built-in Q8_0 file and
the 262,144-token Gemma-layout file of scripts/bench_cold_start.py (written to --keep or a temp folder).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

from model.inference.threads import default_threads  # noqa: E402

BUILTIN = ROOT / "chatapp" / "builtin" / "shakespeare-chat-q8_0.gguf"


def decode_rate(path: Path, threads: int, batch: int, gen_tokens: int) -> float:
    command = [sys.executable, "-m", "chatapp", "bench", str(path), "--no-compare", "--json", "--runs", "3"]
    command += ["--prompt-tokens", "32", "--gen-tokens", str(gen_tokens)]
    command += ["--threads", str(threads), "--threads-batch", str(batch)]
    out = subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT).stdout
    return float(json.loads(out)["kv_cache"]["decode_tokens_per_s"])


def load() -> str:
    with open("/proc/loadavg") as f:
        return ", ".join(f.read().split()[:3])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", type=Path)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--gen-tokens", type=int, default=64)
    parser.add_argument("--keep", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        files = args.files
        if not files:
            folder = args.keep or Path(scratch)
            folder.mkdir(parents=True, exist_ok=True)
            script = ROOT / "scripts" / "bench_cold_start.py"
            subprocess.run([sys.executable, str(script), "--write-files", str(folder)], check=True, cwd=ROOT)
            files = [BUILTIN, folder / "gemma-262k-q8_0.gguf"]
        print(
            f"# decode under load: load average {load()} at start; {os.cpu_count()} cores; "
            f"medians of {args.repeats} alternating runs"
        )
        print("| file | MB | decode/prompt threads | idle tok/s | one core busy tok/s | busy / idle |")
        print("|---|---|---|---|---|---|")
        for path in files:
            size = path.stat().st_size
            default = default_threads(size)
            for threads in args.threads:
                batch = max(threads, default[1])
                idle, busy = [], []
                for _ in range(args.repeats):
                    idle.append(decode_rate(path, threads, batch, args.gen_tokens))
                    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
                    try:
                        busy.append(decode_rate(path, threads, batch, args.gen_tokens))
                    finally:
                        spinner.kill()
                        spinner.wait()
                i, b = statistics.median(idle), statistics.median(busy)
                mark = " (default)" if threads == default[0] else ""
                print(
                    f"| {path.name} | {size / 1e6:.0f} | {threads}/{batch}{mark} | {i:.1f} | {b:.1f} | {b / i:.0%} |",
                    flush=True,
                )
        print(f"# load average {load()} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
