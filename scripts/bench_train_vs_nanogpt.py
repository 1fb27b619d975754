"""Training speed of chatapp's loop (model/training/loop.py, what `chatapp train` runs)
against karpathy/nanoGPT's train.py on the same shape: 6 layers, 6 heads, width 384,
block 256, batch 16, dropout 0.2, no torch.compile, CPU, no gradient accumulation.
Two measurements: nanoGPT's train.py itself and our loop, in fresh processes taking
turns round by round; and, steadier on a busy machine, both models in one process
taking turns step by step (nanoGPT's model.py with its train.py's step, and our
loop's train_step). Same thread count; the first steps are warm-up and not counted.
Prints tokens/s (median of the per-step rates) and the ratios.

    python scripts/bench_train_vs_nanogpt.py --nanogpt /tmp/nanogpt [--threads 2] [--steps 12] [--rounds 3]

nanoGPT has no internet here: its data/shakespeare_char/prepare.py must have been run
on a local input.txt first (its vocabulary is characters, ~84; ours is our 4,096-token
BPE, which makes our LM head and loss about 10x wider: a handicap of some 10% of the
work per token at this size).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SHAPE = dict(n_layer=6, n_head=6, n_embd=384, block_size=256, batch_size=16, dropout=0.2)
WARM_UP_STEPS = 3


def ours_worker(steps: int) -> None:
    """One run of chatapp's training loop on the shape; prints the per-step seconds as JSON."""
    import torch

    from model.network.gpt import GPT, GPTConfig
    from model.training.loop import Batch, Distributed, Run, run_steps
    from model.training.presets import PRESETS
    from model.training.train import sample_batch

    preset = PRESETS["cpu"]
    config = GPTConfig(
        vocab_size=4096,
        context_length=SHAPE["block_size"],
        n_layer=SHAPE["n_layer"],
        n_head=SHAPE["n_head"],
        n_embd=SHAPE["n_embd"],
        dropout=SHAPE["dropout"],
    )
    torch.manual_seed(0)
    model = GPT(config)
    optimizer = torch.optim.AdamW(model.optimizer_groups(preset.weight_decay), lr=1e-3, betas=(0.9, 0.95))
    ids = torch.randint(0, config.vocab_size, (500_000,))
    starts: list[float] = []

    def draw_batch(seed: int) -> Batch:
        starts.append(time.perf_counter())  # a step begins when its batch is drawn
        return Batch(
            *sample_batch(ids, SHAPE["batch_size"], config.context_length, torch.Generator().manual_seed(seed))
        )

    with tempfile.TemporaryDirectory() as out:
        run = Run(
            out=Path(out),
            label="train",
            steps=steps,
            eval_every=steps + 1,
            grad_clip=1.0,
            seed=0,
            learning_rate=lambda step: 1e-3,
            draw_batch=draw_batch,
            validation_loss=lambda: 0.0,
            validation_name="val loss",
            write_outputs=lambda state: None,
            options={},
        )
        ranks = Distributed("cpu")
        run_steps(run, model, optimizer, ranks, {"step": 0, "tokens_seen": 0, "elapsed_s": 0.0})
        starts.append(time.perf_counter() - 0)  # the last step ends before its evaluation and checkpoint
    print(json.dumps([b - a for a, b in zip(starts, starts[1:])]))


def alternating_in_process(folder: Path, steps: int) -> tuple[list[float], list[float]]:
    """Per-step seconds of (ours, nanoGPT's), the two stepping in turn in this process."""
    import importlib.util

    import torch

    from model.network.gpt import GPT, GPTConfig
    from model.training.loop import Batch, train_step

    spec = importlib.util.spec_from_file_location("nanogpt_model", folder / "model.py")  # ours is `model` too
    nanogpt_model = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(nanogpt_model)

    shape = SHAPE
    torch.manual_seed(0)
    ours = GPT(
        GPTConfig(
            vocab_size=4096,
            context_length=shape["block_size"],
            n_layer=shape["n_layer"],
            n_head=shape["n_head"],
            n_embd=shape["n_embd"],
            dropout=shape["dropout"],
        )
    )
    ours_optimizer = torch.optim.AdamW(ours.optimizer_groups(0.1), lr=1e-3, betas=(0.9, 0.95))
    theirs = nanogpt_model.GPT(
        nanogpt_model.GPTConfig(
            block_size=shape["block_size"],
            vocab_size=84,
            n_layer=shape["n_layer"],
            n_head=shape["n_head"],
            n_embd=shape["n_embd"],
            dropout=shape["dropout"],
            bias=False,
        )
    )
    their_optimizer = theirs.configure_optimizers(0.1, 1e-3, (0.9, 0.99), "cpu")
    ours.train(), theirs.train()

    def batch(vocab: int):
        x = torch.randint(0, vocab, (shape["batch_size"], shape["block_size"]))
        return x, torch.roll(x, -1, dims=1)

    def our_step() -> None:
        train_step(ours, ours_optimizer, Batch(*batch(4096)), list(ours.parameters()), 1.0, "cpu")

    def their_step() -> None:  # nanoGPT train.py's step on the CPU: no autocast, no accumulation
        x, y = batch(84)
        _, loss = theirs(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(theirs.parameters(), 1.0)
        their_optimizer.step()
        their_optimizer.zero_grad(set_to_none=True)
        loss.item()

    timings: tuple[list[float], list[float]] = ([], [])
    for _ in range(steps):
        for step, seconds in ((our_step, timings[0]), (their_step, timings[1])):
            start = time.perf_counter()
            step()
            seconds.append(time.perf_counter() - start)
    return timings


def run_ours(steps: int, env: dict) -> list[float]:
    out = subprocess.run(
        [sys.executable, __file__, "--ours-worker", "--steps", str(steps)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def run_nanogpt(folder: Path, steps: int, env: dict) -> list[float]:
    flags = [f"--{k}={v}" for k, v in SHAPE.items()] + [
        "--device=cpu",
        "--compile=False",
        "--gradient_accumulation_steps=1",
        f"--max_iters={steps}",
        "--eval_interval=100000",
        "--eval_iters=1",
        "--log_interval=1",
        "--always_save_checkpoint=False",
        "--dtype=float32",
        f"--out_dir={tempfile.mkdtemp(prefix='nanogpt-')}",
    ]
    out = subprocess.run(
        [sys.executable, "train.py", "config/train_shakespeare_char.py", *flags],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [float(ms) / 1000 for ms in re.findall(r"iter \d+: loss [\d.]+, time ([\d.]+)ms", out)]


def tokens_per_second(step_seconds: list[float]) -> float:
    tokens = SHAPE["batch_size"] * SHAPE["block_size"]
    return statistics.median(tokens / s for s in step_seconds[WARM_UP_STEPS:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nanogpt", type=Path, help="a nanoGPT checkout whose shakespeare_char data is prepared")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--in-process-steps", type=int, default=20, help="steps each in the one-process comparison (0: skip)"
    )
    parser.add_argument("--ours-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ours_worker:
        return ours_worker(args.steps)
    if args.nanogpt is None or not (args.nanogpt / "data" / "shakespeare_char" / "train.bin").is_file():
        sys.exit(
            "bench_train_vs_nanogpt: --nanogpt must be a nanoGPT checkout with data/shakespeare_char/train.bin prepared"
        )
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(ROOT)}
    ours, theirs = [], []
    for round_number in range(args.rounds):
        ours.append(tokens_per_second(run_ours(args.steps, env)))
        theirs.append(tokens_per_second(run_nanogpt(args.nanogpt, args.steps, env)))
        print(
            f"round {round_number + 1}: chatapp {ours[-1]:,.0f} tok/s, nanoGPT {theirs[-1]:,.0f} tok/s, "
            f"load {os.getloadavg()[0]:.2f}",
            file=sys.stderr,
            flush=True,
        )
    in_process = {}
    if args.in_process_steps:
        import torch

        torch.set_num_threads(args.threads)
        mine, nanogpt = alternating_in_process(args.nanogpt, args.in_process_steps)
        in_process = {
            "chatapp_tokens_per_s": tokens_per_second(mine),
            "nanogpt_tokens_per_s": tokens_per_second(nanogpt),
        }
        in_process["ratio"] = in_process["chatapp_tokens_per_s"] / in_process["nanogpt_tokens_per_s"]
        print(
            f"one process, step by step: chatapp {in_process['chatapp_tokens_per_s']:,.0f} tok/s, "
            f"nanoGPT {in_process['nanogpt_tokens_per_s']:,.0f} tok/s",
            file=sys.stderr,
            flush=True,
        )
    result = {
        "shape": SHAPE,
        "threads": args.threads,
        "steps_per_run": args.steps,
        "warm_up_steps": WARM_UP_STEPS,
        "chatapp_tokens_per_s": statistics.median(ours) if ours else None,
        "chatapp_runs": ours,
        "nanogpt_tokens_per_s": statistics.median(theirs) if theirs else None,
        "nanogpt_runs": theirs,
        "ratio": statistics.median(ours) / statistics.median(theirs) if ours else None,
        "one_process_step_by_step": in_process,
        "load_average": os.getloadavg(),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
