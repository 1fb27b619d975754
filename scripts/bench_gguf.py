"""chatapp's llama.cpp path against llama.cpp's own llama-bench, and the worker
process against running llama.cpp in chatapp's own process: same file, same
threads, same run, alternating, so the machine's load hits all three alike.

    python scripts/bench_gguf.py --llama-bench PATH/llama-bench [FILE.gguf ...]

llama-bench is built from the llama.cpp that llama-cpp-python vendors (README,
"Bring your own GGUF"). Without files: the built-in chat model's Q8_0 and a
foreign Qwen2-architecture file of ~30M random weights (tests/helpers/foreign_gguf.py).
llama-bench's "tg128 @ d128" decodes 128 tokens after 128 in the cache, as
`chatapp bench` does after its 128-token prompt. Prints a Markdown table and
writes docs/measurements/gguf_bench.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from model.inference.threads import default_threads  # noqa: E402


def llama_bench(binary: str, path: Path, threads: int) -> float:
    out = subprocess.run(
        [binary, "-m", str(path), "-t", str(threads), "-p", "0", "-n", "128", "-d", "128", "-r", "3", "-o", "json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return float(json.loads(out)[0]["avg_ts"])


def chatapp_bench(path: Path, in_process: bool) -> dict:
    command = [sys.executable, "-m", "chatapp", "bench", str(path), "--no-compare", "--runs", "3", "--json"]
    out = subprocess.run(
        command + (["--in-process"] if in_process else []), capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out)["kv_cache"]


def foreign_file(folder: Path) -> Path:
    from tests.helpers.foreign_gguf import write_foreign_gguf

    return write_foreign_gguf(
        folder / "qwen2-30m-f16.gguf",
        "qwen2",
        embedding_length=512,
        head_count=8,
        block_count=8,
        feed_forward_length=1536,
        name="qwen2-30m-random",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", type=Path)
    parser.add_argument("--llama-bench", required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "measurements" / "gguf_bench.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        files = args.files or [ROOT / "chatapp" / "builtin" / "shakespeare-chat-q8_0.gguf", foreign_file(Path(folder))]
        rows = []
        for path in files:
            threads = default_threads(path.stat().st_size)[0]
            samples = {"llama-bench": [], "worker": [], "in process": [], "ttft worker": [], "ttft in process": []}
            for _ in range(args.rounds):
                samples["llama-bench"].append(llama_bench(args.llama_bench, path, threads))
                worker, local = chatapp_bench(path, False), chatapp_bench(path, True)
                samples["worker"].append(worker["decode_tokens_per_s"])
                samples["in process"].append(local["decode_tokens_per_s"])
                samples["ttft worker"].append(worker["time_to_first_token_s"] * 1000)
                samples["ttft in process"].append(local["time_to_first_token_s"] * 1000)
            medians = {key: statistics.median(values) for key, values in samples.items()}
            rows.append(
                {
                    "file": path.name,
                    "size_mb": round(path.stat().st_size / 1e6, 1),
                    "threads": threads,
                    "median": medians,
                    "samples": samples,
                }
            )
    print(
        "| file | threads | llama-bench tg128@d128 | chatapp (worker) | chatapp (in process) | worker / llama-bench "
        "| worker / in process | first token worker / in process |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        m = row["median"]
        print(
            f"| {row['file']} ({row['size_mb']} MB) | {row['threads']} | {m['llama-bench']:,.0f} | "
            f"{m['worker']:,.0f} | "
            f"{m['in process']:,.0f} | {m['worker'] / m['llama-bench']:.0%} | {m['worker'] / m['in process']:.0%} | "
            f"{m['ttft worker']:.1f} / {m['ttft in process']:.1f} ms |"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"machine": platform.processor() or platform.machine(), "rows": rows}, indent=2) + "\n"
    )


if __name__ == "__main__":
    main()
