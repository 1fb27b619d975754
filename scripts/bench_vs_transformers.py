"""Decode speed of chatapp's torch engine against Hugging Face transformers'
generate() on the same weights (GPT2LMHeadModel with its own KV cache): same
device, same prompt, same number of tokens, greedy. Median of several runs.

    python scripts/bench_vs_transformers.py [MODEL_FOLDER] [--prompt-tokens 128] [--gen-tokens 128]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from chatapp.bench import bench_prompt, measure
from chatapp.model_registry import resolve_model
from model.inference.torch_engine import TorchEngine
from model.network.hf_convert import to_hf_gpt2


def hf_generate_seconds(hf, prompt: list[int], new_tokens: int) -> float:
    ids = torch.tensor([prompt])
    start = time.perf_counter()
    with torch.inference_mode():
        out = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                          do_sample=False, use_cache=True, pad_token_id=0)
    elapsed = time.perf_counter() - start
    assert out.shape[1] == len(prompt) + new_tokens
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model", nargs="?")
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--gen-tokens", type=int, default=128)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    engine = TorchEngine.load(resolve_model(args.model).path, device="cpu")
    hf = to_hf_gpt2(engine.model)
    prompt = bench_prompt(engine, args.prompt_tokens)
    measure(engine, prompt, 8, True)
    hf_generate_seconds(hf, prompt, 8)

    ours = statistics.median(measure(engine, prompt, args.gen_tokens, True).tokens_per_second for _ in range(args.runs))
    theirs = []
    for _ in range(args.runs):
        first = hf_generate_seconds(hf, prompt, 1)  # prefill + one token
        full = hf_generate_seconds(hf, prompt, args.gen_tokens)
        theirs.append((args.gen_tokens - 1) / (full - first))
    theirs_median = statistics.median(theirs)
    print(json.dumps({
        "model": engine.model_name, "prompt_tokens": len(prompt), "gen_tokens": args.gen_tokens,
        "torch_threads": torch.get_num_threads(),
        "chatapp_decode_tokens_per_s": ours, "transformers_decode_tokens_per_s": theirs_median,
        "speedup": ours / theirs_median,
    }, indent=2))


if __name__ == "__main__":
    main()
