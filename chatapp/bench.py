"""`chatapp bench`: prefill and decode speed, with and without the KV cache.

Each measurement runs a fixed prompt (validation text of the built-in corpus)
and greedy generation that ignores end tokens, several times; the median is
reported. A torch engine that compiles its decode step is measured once the
compile is done (its time is reported), so the figures are the compiled step's.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from model.inference.backend import Event, Finished, collect_reply
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


# --- `chatapp bench --parallel N[,N...]`: many replies at once on parallel slots ---


def parse_parallel_counts(text: str) -> list[int]:
    """'1,2,4,8' -> [1, 2, 4, 8]; a one-line ValueError for anything else."""
    from model.inference.slots import MAX_SLOTS

    counts: list[int] = []
    for part in text.split(","):
        try:
            count = int(part.strip())
        except ValueError:
            count = 0
        if not 1 <= count <= MAX_SLOTS:
            raise ValueError(f"--parallel takes whole numbers from 1 to {MAX_SLOTS} separated by commas, got {text!r}")
        if count not in counts:
            counts.append(count)
    return counts


@dataclass
class TimedReply:
    """One reply's events as they came: when its first and last tokens arrived, and its Finished."""

    first_token_at: float = 0.0
    last_token_at: float = 0.0
    finished: Finished | None = None


def read_timed(events: Iterator[Event], start: threading.Barrier) -> TimedReply:
    timed = TimedReply()
    start.wait()
    for event in events:
        if isinstance(event, Finished):
            timed.finished = event
        elif event.token_ids:
            timed.last_token_at = time.perf_counter()
            timed.first_token_at = timed.first_token_at or timed.last_token_at
    return timed


def measure_parallel(engine, prompt: list[int], replies: int, gen_tokens: int) -> dict:
    """`replies` replies of the same prompt started at once (greedy, as the single-reply bench, each
    with a seed of its own) and read in a thread each. Aggregate speed: every reply's tokens over the
    time from the first token of any reply to the last token of any."""
    streams = [
        engine.generate_ids(prompt, SamplingParams(temperature=0.0, max_tokens=gen_tokens, seed=seed), stop_ids=set())
        for seed in range(replies)
    ]
    start = threading.Barrier(replies + 1)
    with ThreadPoolExecutor(replies) as readers:
        futures = [readers.submit(read_timed, stream, start) for stream in streams]
        start.wait()
        started = time.perf_counter()
        timed = [future.result() for future in futures]
    finished = [t.finished for t in timed if t.finished is not None]
    assert len(finished) == replies, "a reply always ends with Finished"
    tokens = sum(f.completion_tokens for f in finished)
    wall = max(t.last_token_at for t in timed) - min(t.first_token_at for t in timed)
    first_token = [t.first_token_at - started for t in timed]
    return {
        "slots": replies,
        "completion_tokens": tokens,
        "reply_tokens": [f.completion_tokens for f in finished],
        "wall_s": wall,
        "aggregate_tokens_per_s": tokens / wall if wall > 0 else 0.0,
        "reply_tokens_per_s": statistics.median(f.tokens_per_second for f in finished),
        "first_token_s": {"median": statistics.median(first_token), "max": max(first_token)},
    }


def slot_opener(
    spec: str | None,
    backend: str,
    context: int | None,
    threads: tuple[int | None, int | None],
    device: str = "auto",
    compile: str = "off",
) -> Callable[[int], Any]:
    """slots -> an engine on slots for the model `spec` names: a GGUF file on llama.cpp, a model folder on
    torch (checked now: a model on another server, or a GGUF file with --backend torch, is a one-line
    ValueError). `threads`: (decode, prompt); `compile`: the torch step's --compile."""
    from chatapp.models.resolve import resolve_model
    from chatapp.serving.endpoint import parse_endpoint_spec
    from chatapp.serving.parallel import open_slots, open_torch_slots

    if parse_endpoint_spec(spec) is not None:
        raise ValueError("--parallel benches a local model, not a model on another server")
    ref = resolve_model(spec)
    if ref.kind == "gguf" and backend == "torch":
        raise ValueError("--parallel runs a GGUF file on the llama.cpp engine, not on --backend torch")
    if ref.kind != "gguf" and backend == "llama.cpp":
        raise ValueError(f"--parallel runs {ref.name}, a model folder, on the torch engine, not on --backend llama")
    if context is not None and context < 16:
        raise ValueError(f"--context must be at least 16 tokens, got {context}")
    if ref.kind == "gguf":
        return lambda slots: open_slots(ref.path, slots, context, threads)
    return lambda slots: open_torch_slots(ref.path, slots, device, threads, compile)


def run_parallel_bench(
    open_slots: Callable[[int], Any],
    counts: list[int],
    prompt_tokens: int = 128,
    gen_tokens: int = 128,
    runs: int = 1,
) -> dict:
    """For each N of `counts`: the model opened on N slots (`open_slots(N)`, a SlotEngine; N=1 the
    same engine with one slot, so that the numbers compare), N replies at once, `runs` times; the run
    with the median aggregate speed is kept."""
    if gen_tokens < 1 or prompt_tokens < 1 or runs < 1:
        raise ValueError("--prompt-tokens, --gen-tokens and --runs must be at least 1 with --parallel")
    result: dict[str, Any] = {"prompt_tokens": prompt_tokens, "gen_tokens": gen_tokens, "runs": runs, "parallel": []}
    for count in counts:
        engine = open_slots(count)
        try:
            if prompt_tokens + gen_tokens > engine.context_length:
                raise ValueError(
                    f"--prompt-tokens + --gen-tokens ({prompt_tokens + gen_tokens}) exceed a slot's context "
                    f"({engine.context_length})"
                )
            wait_for_compile = getattr(engine, "wait_for_compile", None)  # the torch slots' compiled step
            if wait_for_compile is not None:
                result["compile"] = wait_for_compile()
            prompt = bench_prompt(engine, prompt_tokens)
            result.update(backend=engine.name + " slots", model=engine.model_name, context_length=engine.context_length)
            result.update(prompt_tokens=len(prompt), threads={"decode": engine.threads[0], "prompt": engine.threads[1]})
            measured = sorted(
                (measure_cold(engine, prompt, count, gen_tokens) for _ in range(runs)),
                key=lambda run: run["aggregate_tokens_per_s"],
            )
            result["parallel"].append(measured[len(measured) // 2])
        finally:
            engine.close()
    return result


def measure_cold(engine, prompt: list[int], replies: int, gen_tokens: int) -> dict:
    """measure_parallel after a short warm-up on every slot with a prompt that shares no more than its
    first token with `prompt`: each reply then reads its whole prompt, as a fresh request would (a slot
    keeps its last prompt and reuses what a new one shares with it)."""
    measure_parallel(engine, prompt[:1] + prompt[:0:-1][:15], replies, 4)
    return measure_parallel(engine, prompt, replies, gen_tokens)


def format_parallel_bench(result: dict) -> str:
    threads = result["threads"]
    lines = [
        f"{result['backend']} on {result['model']}: prompt {result['prompt_tokens']} tokens, generate "
        f"{result['gen_tokens']} per reply, N replies at once on N slots, median of {result['runs']} run(s), "
        f"{threads['decode']} decode / {threads['prompt']} prompt threads"
        + (f", compile {result['compile']}" if "compile" in result else ""),
        f"  {'N':>3}  {'aggregate tok/s':>15}  {'per reply tok/s':>15}  {'first token median / max':>26}",
    ]
    for run in result["parallel"]:
        first = run["first_token_s"]
        lines.append(
            f"  {run['slots']:>3}  {run['aggregate_tokens_per_s']:>15.1f}  {run['reply_tokens_per_s']:>15.1f}  "
            f"{first['median'] * 1000:>11.1f} ms / {first['max'] * 1000:>8.1f} ms"
        )
    return "\n".join(lines)
