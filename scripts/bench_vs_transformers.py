"""Decode speed, side by side in one run: chatapp's torch engine (eager, and with its
compiled decode step), Hugging Face transformers' generate() on the same weights
(GPT2LMHeadModel with its own KV cache), and llama.cpp on the F32 GGUF export of the
same weights (llama-cpp-python in this process through chatapp's engine core, and
llama.cpp's own llama-bench when --llama-bench is given). Same prompt, same number of
tokens, greedy, the same thread count for all; the engines take turns round by round
so that the machine's load hits them alike. Prints the median and the spread of the
rounds, and the load average before and after.

    OMP_NUM_THREADS=1 python scripts/bench_vs_transformers.py [MODEL] [--rounds 5] [--llama-bench PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from chatapp.bench import bench_prompt, measure  # noqa: E402
from chatapp.models.resolve import resolve_model  # noqa: E402
from chatapp.paths import compile_cache_dir  # noqa: E402
from model.inference.torch_engine import TorchEngine  # noqa: E402
from model.network.hf_convert import to_hf_gpt2  # noqa: E402


def hf_generate_seconds(hf, prompt: list[int], new_tokens: int) -> float:
    ids = torch.tensor([prompt])
    start = time.perf_counter()
    with torch.inference_mode():
        out = hf.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            use_cache=True,
            pad_token_id=0,
        )
    elapsed = time.perf_counter() - start
    assert out.shape[1] == len(prompt) + new_tokens
    return elapsed


def hf_decode_rate(hf, prompt: list[int], new_tokens: int) -> float:
    first = hf_generate_seconds(hf, prompt, 1)  # prefill and one token: what decoding does not include
    return (new_tokens - 1) / (hf_generate_seconds(hf, prompt, new_tokens) - first)


def llama_bench_rate(binary: str, gguf: Path, threads: int, prompt_tokens: int, gen_tokens: int) -> float:
    out = subprocess.run(
        [
            binary,
            "-m",
            str(gguf),
            "-t",
            str(threads),
            "-p",
            "0",
            "-n",
            str(gen_tokens),
            "-d",
            str(prompt_tokens),
            "-r",
            "1",
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return float(json.loads(out)[0]["avg_ts"])


def export_f32(model_dir: Path, folder: Path) -> Path:
    out = folder / "f32.gguf"
    subprocess.run(
        [sys.executable, "-m", "chatapp", "export", str(model_dir), "--type", "f32", "-o", str(out)],
        check=True,
        capture_output=True,
    )
    return out


def summary(rates: list[float]) -> dict:
    return {"median": statistics.median(rates), "min": min(rates), "max": max(rates), "runs": rates}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?")
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--gen-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--llama-bench", default=None, help="llama.cpp's llama-bench binary (optional)")
    parser.add_argument("--no-llama", action="store_true", help="skip llama.cpp")
    args = parser.parse_args()
    threads = int(os.environ.get("OMP_NUM_THREADS") or torch.get_num_threads())
    load_before = os.getloadavg()

    ref = resolve_model(args.model)
    eager = TorchEngine.load(ref.path, device="cpu", compile="off")
    compiled = TorchEngine.load(ref.path, device="cpu", compile="on", compile_cache=compile_cache_dir())
    print(f"compiled decode step: {compiled.wait_for_compile()} in {compiled.compile_seconds:.1f} s", file=sys.stderr)
    hf = to_hf_gpt2(eager.model)
    prompt = bench_prompt(eager, args.prompt_tokens)
    runners = {
        "torch_eager": lambda: measure(eager, prompt, args.gen_tokens, True).tokens_per_second,
        "torch_compiled": lambda: measure(compiled, prompt, args.gen_tokens, True).tokens_per_second,
        "transformers_generate": lambda: hf_decode_rate(hf, prompt, args.gen_tokens),
    }
    with tempfile.TemporaryDirectory() as folder:
        if not args.no_llama:
            from quant.llama_engine import LlamaEngine

            gguf = export_f32(ref.path, Path(folder))
            llama = LlamaEngine.load(gguf, n_threads=threads)
            runners["llama_cpp_f32_python"] = lambda: measure(llama, prompt, args.gen_tokens, True).tokens_per_second
            if args.llama_bench:
                runners["llama_bench_f32"] = lambda: llama_bench_rate(
                    args.llama_bench, gguf, threads, len(prompt), args.gen_tokens
                )
        for run in runners.values():
            run()  # warm-up
        rates: dict[str, list[float]] = {name: [] for name in runners}
        for _ in range(args.rounds):
            for name, run in runners.items():
                rates[name].append(run())
    results = {name: summary(values) for name, values in rates.items()}
    best = results["torch_compiled"]["median"]
    ratios = {
        "compiled_vs_eager": best / results["torch_eager"]["median"],
        "compiled_vs_transformers": best / results["transformers_generate"]["median"],
    }
    for name in ("llama_cpp_f32_python", "llama_bench_f32"):
        if name in results:
            ratios[f"compiled_vs_{name}"] = best / results[name]["median"]
    print(
        json.dumps(
            {
                "model": eager.model_name,
                "prompt_tokens": len(prompt),
                "gen_tokens": args.gen_tokens,
                "threads": threads,
                "rounds": args.rounds,
                "compile_seconds": compiled.compile_seconds,
                "decode_tokens_per_s": results,
                "ratios": ratios,
                "load_average_before": load_before,
                "load_average_after": os.getloadavg(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
