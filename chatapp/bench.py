"""`chatapp bench`: prefill and decode speed, with and without the KV cache.

Each measurement runs a fixed prompt (validation text of the built-in corpus)
and greedy generation that ignores end tokens, several times; the median is
reported. A torch engine that compiles its decode step is measured once the
compile is done (its time is reported), so the figures are the compiled step's.
"""

from __future__ import annotations

import statistics

from model.inference.backend import Finished, collect_reply
from model.inference.sampling import SamplingParams
from model.training.corpus import builtin_split


def bench_prompt(backend, length: int) -> list[int]:
    text = "".join(w.text for w in builtin_split().validation[:3])
    return backend.prompt_ids(text)[:length]


def measure(backend, prompt: list[int], gen_tokens: int, use_cache: bool) -> Finished:
    params = SamplingParams(temperature=0.0, max_tokens=gen_tokens, seed=0)
    backend.reset_cache()  # every run starts cold: no prefix reuse between runs
    reply = collect_reply(backend.generate_ids(prompt, params, stop_ids=set(), use_cache=use_cache))
    assert reply.finished is not None, "a reply always ends with Finished"
    return reply.finished


def run_bench(
    backend,
    prompt_tokens: int = 128,
    gen_tokens: int = 128,
    runs: int = 5,
    compare_no_cache: bool = True,
    where: str = "",
) -> dict:
    if prompt_tokens + gen_tokens > backend.context_length:
        raise ValueError(
            f"--prompt-tokens + --gen-tokens ({prompt_tokens + gen_tokens}) exceed the context length "
            f"({backend.context_length})"
        )
    prompt = bench_prompt(backend, prompt_tokens)
    wait_for_compile = getattr(backend, "wait_for_compile", None)
    compile_status = wait_for_compile() if wait_for_compile else None
    modes = [True, False] if compare_no_cache else [True]
    result = {
        "backend": backend.name + (f" ({where})" if where else ""),
        "model": backend.model_name,
        "context_length": backend.context_length,
        "trained_context_length": backend.trained_context_length,
        "prompt_tokens": len(prompt),
        "gen_tokens": gen_tokens,
        "runs": runs,
    }
    threads = getattr(backend, "threads", None)  # (decode, prompt); None: the engine's own (a GPU, a server)
    if threads is not None:
        result["threads"] = {"decode": threads[0], "prompt": threads[1]}
    if compile_status is not None:
        result["compile"] = {"status": compile_status, "seconds": backend.compile_seconds}
    measure(backend, prompt, 8, True)  # warm-up
    for use_cache in modes:
        finished = [measure(backend, prompt, gen_tokens, use_cache) for _ in range(runs)]
        ttft = statistics.median(f.time_to_first_token_s for f in finished)
        key = "kv_cache" if use_cache else "no_cache"
        result[key] = {
            "time_to_first_token_s": ttft,
            "prefill_tokens_per_s": len(prompt) / ttft if ttft else 0.0,
            "decode_tokens_per_s": statistics.median(f.tokens_per_second for f in finished),
            "completion_tokens": finished[0].completion_tokens,
        }
    if compare_no_cache:
        result["kv_cache_speedup"] = result["kv_cache"]["decode_tokens_per_s"] / max(
            result["no_cache"]["decode_tokens_per_s"], 1e-9
        )
    return result


def format_bench(result: dict) -> str:
    lines = [
        f"{result['backend']} on {result['model']}: prompt {result['prompt_tokens']} tokens, "
        f"generate {result['gen_tokens']}, median of {result['runs']} runs"
        + (
            f", {result['threads']['decode']} decode / {result['threads']['prompt']} prompt threads"
            if "threads" in result
            else ""
        )
    ]
    if "compile" in result:
        seconds = result["compile"]["seconds"]
        lines.append(
            f"  compiled decode step: {result['compile']['status']}"
            + (f" (compiled in {seconds:.1f} s)" if seconds else "")
        )
    for key, label in (("kv_cache", "with KV cache"), ("no_cache", "without cache (full recompute)")):
        if key in result:
            r = result[key]
            lines.append(
                f"  {label:32s} prefill {r['prefill_tokens_per_s']:9.1f} tok/s   "
                f"decode {r['decode_tokens_per_s']:8.1f} tok/s   "
                f"first token {r['time_to_first_token_s'] * 1000:7.1f} ms"
            )
    if "kv_cache_speedup" in result:
        lines.append(f"  KV cache decode speed-up: {result['kv_cache_speedup']:.1f}x")
    return "\n".join(lines)
