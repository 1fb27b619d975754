"""Make the README's GGUF table: every export type of a model, with its file
size, held-out perplexity, change against F32 and decode speed, measured by the
project's own commands (`chatapp export`, `chatapp eval`, `chatapp bench`).

    python scripts/quant_table.py [MODEL] [--runs 5] [--json out.json]

MODEL defaults to the built-in base model. The first row is the model folder
itself, run by the torch engine (which does not read GGUF files): the
reference for speed.
Each type takes about a minute on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

# from the most bits per weight to the fewest
TABLE_ORDER = ("f32", "f16", "bf16", "q8_0", "q6_k", "q5_k_m", "q5_1", "q5_0", "q4_k_m", "q4_1", "q4_0")


def chatapp(*args: str) -> str:
    command = [sys.executable, "-m", "chatapp", *args]
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{completed.stderr}")
    return completed.stdout


def measure(model: str, runs: int) -> dict:
    return {
        "eval": json.loads(chatapp("eval", model, "--json")),
        "bench": json.loads(chatapp("bench", model, "--runs", str(runs), "--no-compare", "--json")),
    }


def model_size(model: str) -> int:
    """The size `chatapp models` reports for a model name or path."""
    for entry in json.loads(chatapp("models", "--json")):
        if model in (entry["name"], entry["path"]):
            return entry["size_bytes"]
    return sum(p.stat().st_size for p in Path(model).glob("*") if p.is_file())


def markdown(rows: list[dict]) -> str:
    f32_ppl = next(r["eval"]["perplexity"] for r in rows if r["type"] == "f32")
    lines = [
        "| type | file size | perplexity | vs F32 | decode tok/s | backend |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        ppl = r["eval"]["perplexity"]
        change = f"{round((ppl / f32_ppl - 1) * 100, 2) + 0.0:+.2f}%"  # + 0.0: no "-0.00%"
        size = f"{r['bytes'] / 1e6:.1f} MB"
        decode = r["bench"]["kv_cache"]["decode_tokens_per_s"]
        lines.append(f"| {r['type']} | {size} | {ppl:.2f} | {change} | {decode:.0f} | {r['bench']['backend']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", default="shakespeare-base")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", help="also write the raw measurements here")
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        rows.append({"type": "model folder", "bytes": model_size(args.model), **measure(args.model, args.runs)})
        for export_type in TABLE_ORDER:
            path = os.path.join(scratch, f"{export_type}.gguf")
            chatapp("export", args.model, "--type", export_type, "-o", path)
            row = {"type": export_type, "bytes": os.path.getsize(path), **measure(path, args.runs)}
            os.remove(path)
            rows.append(row)
            print(
                f"{export_type}: {row['bytes'] / 1e6:.1f} MB, ppl {row['eval']['perplexity']:.3f}, "
                f"{row['bench']['kv_cache']['decode_tokens_per_s']:.0f} tok/s",
                file=sys.stderr,
                flush=True,
            )
    print(markdown(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
