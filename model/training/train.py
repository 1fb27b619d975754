"""Training the GPT: AdamW, warmup + cosine decay, clipping, evaluation,
exact resume, and DistributedDataParallel under torchrun.

Batches and dropout draw from random generators re-seeded at every step from
(seed, step, rank), so a resumed run continues exactly as an uninterrupted one
would without saving any random state. Checkpoints are safetensors + JSON: no
pickle.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from model.training.dataset import BUILTIN_TOKENIZER, encode_works, load_split
from model.network.device import resolve_device
from model.training.validation_loss import evaluate_model
from model.network.gpt import GPT, GPTConfig
from model.training.loss_history import History
from model.network.model_folder import make_config, save_model, write_json_atomic
from model.training.presets import PRESETS, Preset
from model.training.progress import Progress
from model.text.tokenizer import SPECIAL_TOKENS, Tokenizer

CHECKPOINT_DIR = "checkpoint"


@dataclass
class TrainOptions:
    out: str
    preset: str = "cpu"
    data: str | None = None  # None: the built-in Shakespeare corpus
    steps: int | None = None  # None: the preset's
    device: str = "auto"
    resume: bool = False
    seed: int = 1337
    compile: bool = False
    vocab_size: int = 4096  # only used when training a tokenizer for --data
    batch_size: int | None = None
    name: str | None = None


def cosine_schedule(step: int, warmup_steps: int, peak: float, floor: float, total_steps: int) -> float:
    """Linear warmup to peak, then cosine decay to floor at total_steps."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    cosine = 0.5 * (1 + math.cos(math.pi * progress))
    return floor + cosine * (peak - floor)


def learning_rate(step: int, preset: Preset, total_steps: int) -> float:
    return cosine_schedule(step, preset.warmup_steps, preset.learning_rate, preset.min_learning_rate, total_steps)


def step_seed(seed: int, step: int, rank: int) -> int:
    return (seed * 1_000_003 + step * 7_919 + rank * 104_729) % (2**63)


def sample_batch(ids: torch.Tensor, batch_size: int, length: int, generator: torch.Generator):
    starts = torch.randint(0, len(ids) - length - 1, (batch_size,), generator=generator)
    x = torch.stack([ids[s : s + length] for s in starts.tolist()])
    y = torch.stack([ids[s + 1 : s + length + 1] for s in starts.tolist()])
    return x, y


# --- checkpoints: model + optimizer state in safetensors, the rest in JSON ---

def save_checkpoint(folder: Path, model: GPT, optimizer: torch.optim.Optimizer, state: dict) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    optimizer_state = optimizer.state_dict()
    for index, values in optimizer_state["state"].items():
        for key, value in values.items():
            tensors[f"optimizer.{index}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    temporary = folder / "state.safetensors.tmp"
    save_file(tensors, str(temporary))
    os.replace(temporary, folder / "state.safetensors")
    write_json_atomic(folder / "state.json", {**state, "param_groups": optimizer_state["param_groups"]})


def load_checkpoint(folder: Path, model: GPT, optimizer: torch.optim.Optimizer, device: str) -> dict:
    from safetensors.torch import load_file

    state = json.loads((folder / "state.json").read_text())
    tensors = load_file(str(folder / "state.safetensors"), device=device)
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}, strict=False)
    per_param: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            per_param.setdefault(int(index), {})[name] = value.cpu() if name == "step" else value
    optimizer.load_state_dict({"state": per_param, "param_groups": state.pop("param_groups")})
    return state


# --- the run ---

class Distributed:
    """Rank and world size; DDP only under torchrun with more than one process."""

    def __init__(self, device: str):
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.enabled = self.world_size > 1
        if self.enabled:
            dist.init_process_group(backend="nccl" if device == "cuda" else "gloo")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def replicas_in_sync(self, model: GPT) -> bool:
        flat = torch.cat([p.detach().float().flatten().cpu() for p in model.parameters()])
        gathered = [torch.zeros_like(flat) for _ in range(self.world_size)]
        dist.all_gather(gathered, flat)
        return all(torch.equal(gathered[0], other) for other in gathered[1:])

    def close(self) -> None:
        if self.enabled:
            dist.destroy_process_group()


def prepare_tokenizer(options: TrainOptions, train_texts: list[str], out: Path) -> Tokenizer:
    existing = out / "tokenizer.tiktoken"
    if options.resume and existing.is_file():
        return Tokenizer.load(existing)
    if options.data is None:
        return Tokenizer.load(BUILTIN_TOKENIZER)
    from model.text.bpe import train_bpe

    return Tokenizer(train_bpe(train_texts, options.vocab_size - len(SPECIAL_TOKENS)))


def train(options: TrainOptions, log=print) -> dict:
    """Train and write a model folder to options.out; returns the final evaluation."""
    preset = PRESETS[options.preset]
    if options.batch_size:
        preset = replace(preset, batch_size=options.batch_size)
    total_steps = options.steps or preset.steps
    device = resolve_device(options.device)
    ranks = Distributed(device)
    if ranks.enabled and device == "cuda":
        device = f"cuda:{ranks.local_rank}"
        torch.cuda.set_device(device)
    out = Path(options.out)
    checkpoint_dir = out / CHECKPOINT_DIR

    split = load_split(options.data)
    tokenizer = prepare_tokenizer(options, [w.text for w in split.train], out)
    train_stream = encode_works(split.train, tokenizer)
    val_stream = encode_works(split.validation, tokenizer)
    config = GPTConfig(
        vocab_size=tokenizer.vocab_size,
        context_length=preset.context_length,
        n_layer=preset.n_layer,
        n_head=preset.n_head,
        n_embd=preset.n_embd,
        dropout=preset.dropout,
    )
    if len(train_stream.ids) < config.context_length + 2 or len(val_stream.ids) < 2:
        raise ValueError(f"not enough text to train on: {len(train_stream.ids)} training tokens")

    torch.manual_seed(options.seed)
    model = GPT(config).to(device)
    optimizer = torch.optim.AdamW(model.optimizer_groups(preset.weight_decay), lr=preset.learning_rate, betas=(0.9, 0.95))
    state = {"step": 0, "tokens_seen": 0, "elapsed_s": 0.0}
    if options.resume:
        if not (checkpoint_dir / "state.json").is_file():
            raise ValueError(f"--resume: no checkpoint in {checkpoint_dir}")
        state = load_checkpoint(checkpoint_dir, model, optimizer, device)
    train_model = model
    if options.compile:
        train_model = torch.compile(model)
    if ranks.enabled:
        train_model = torch.nn.parallel.DistributedDataParallel(train_model, device_ids=[ranks.local_rank] if device.startswith("cuda") else None)

    train_ids = torch.from_numpy(train_stream.ids)
    val_ids = torch.from_numpy(val_stream.ids)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda") else torch.autocast("cpu", enabled=False)
    history = History(out) if ranks.is_main else None
    if history and not options.resume:
        history.reset()
    tokens_per_step = preset.batch_size * config.context_length * ranks.world_size
    metadata = {
        "preset": options.preset,
        "data": options.data or "built-in Shakespeare corpus",
        "seed": options.seed,
        "device": device,
        "world_size": ranks.world_size,
        "parameters": model.num_parameters(),
        "train_tokens": int(len(train_stream.ids)),
        "validation_tokens": int(len(val_stream.ids)),
        "tokens_per_step": tokens_per_step,
        "steps": total_steps,
        "preset_settings": asdict(preset),
    }
    if ranks.is_main:
        out.mkdir(parents=True, exist_ok=True)
        log(f"training {model.num_parameters() / 1e6:.2f}M parameters on {device} x{ranks.world_size}, "
            f"{len(train_stream.ids):,} training tokens, {total_steps} steps of {tokens_per_step:,} tokens")

    def estimate_val_loss() -> float:
        generator = torch.Generator().manual_seed(options.seed)  # same batches every time
        model.eval()
        losses = []
        with torch.inference_mode(), autocast:
            for _ in range(preset.eval_batches):
                x, y = sample_batch(val_ids, preset.batch_size, min(config.context_length, len(val_ids) - 2), generator)
                losses.append(model(x.to(device), y.to(device))[1].item())
        model.train()
        return float(np.mean(losses))

    def write_outputs(final: bool) -> None:
        folder_config = make_config(config.to_dict(), options.name or out.name, {**metadata, **state})
        save_model(out, model, tokenizer, folder_config)
        save_checkpoint(checkpoint_dir, model, optimizer, {**state, "options": asdict(options)})

    progress = Progress(total_steps, "train", start=state["step"]) if ranks.is_main else None
    recent_losses: list[float] = []
    run_start = time.monotonic() - state["elapsed_s"]
    model.train()
    while state["step"] < total_steps:
        step = state["step"]
        lr = learning_rate(step, preset, total_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        generator = torch.Generator().manual_seed(step_seed(options.seed, step, ranks.rank))
        torch.manual_seed(step_seed(options.seed + 1, step, ranks.rank))  # dropout
        x, y = sample_batch(train_ids, preset.batch_size, config.context_length, generator)
        step_start = time.monotonic()
        with autocast:
            _, loss = train_model(x.to(device), y.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), preset.grad_clip)
        optimizer.step()
        recent_losses.append(loss.item())
        state["step"] = step + 1
        state["tokens_seen"] += tokens_per_step
        state["elapsed_s"] = time.monotonic() - run_start
        if progress:
            rate = tokens_per_step / max(time.monotonic() - step_start, 1e-9)
            progress.update(state["step"], f"loss {loss.item():.3f} {rate:,.0f} tok/s")
        if state["step"] % preset.eval_every == 0 or state["step"] == total_steps:
            if ranks.is_main:
                val_loss = estimate_val_loss()
                train_loss = float(np.mean(recent_losses))
                recent_losses.clear()
                history.add(state["step"], state["tokens_seen"], train_loss, val_loss, lr, state["elapsed_s"])
                progress.message(f"step {state['step']}: train loss {train_loss:.4f}, val loss {val_loss:.4f}")
                write_outputs(final=False)
            if ranks.enabled:
                dist.barrier()
    if progress:
        progress.close()

    result = {}
    if ranks.enabled:
        metadata["replicas_in_sync"] = ranks.replicas_in_sync(model)
    if ranks.is_main:
        result = evaluate_model(model, val_stream.ids, val_stream.n_chars, device)
        metadata["validation"] = result
        metadata["tokens_per_second"] = state["tokens_seen"] / max(state["elapsed_s"], 1e-9)
        write_outputs(final=True)
        log(f"validation: {result['nats_per_token']:.4f} nats/token, {result['nats_per_char']:.4f} nats/char, "
            f"perplexity {result['perplexity']:.2f}; model written to {out}")
    ranks.close()
    return result
