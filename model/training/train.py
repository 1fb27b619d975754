"""Training the GPT: AdamW, warmup + cosine decay, clipping, evaluation,
exact resume, and DistributedDataParallel under torchrun (the step loop, the
checkpoints and the processes are model.training.loop's, shared with
fine-tuning).
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from model.network.gpt import GPT, GPTConfig
from model.network.model_folder import make_config, save_model
from model.text.tokenizer import SPECIAL_TOKENS, Tokenizer
from model.training.dataset import BUILTIN_TOKENIZER, encode_works, load_split
from model.training.loop import (
    Batch,
    Distributed,
    Run,
    autocast,
    cosine_schedule,
    require_checkpoint,
    run_steps,
    start_state,
)
from model.training.options import TrainOptions
from model.training.presets import PRESETS, Preset
from model.training.validation_loss import evaluate_model


def learning_rate(step: int, preset: Preset, total_steps: int) -> float:
    return cosine_schedule(step, preset.warmup_steps, preset.learning_rate, preset.min_learning_rate, total_steps)


def sample_batch(ids: torch.Tensor, batch_size: int, length: int, generator: torch.Generator):
    starts = torch.randint(0, len(ids) - length - 1, (batch_size,), generator=generator)
    x = torch.stack([ids[s : s + length] for s in starts.tolist()])
    y = torch.stack([ids[s + 1 : s + length + 1] for s in starts.tolist()])
    return x, y


def prepare_tokenizer(options: TrainOptions, train_texts: list[str], out: Path) -> Tokenizer:
    existing = out / "tokenizer.tiktoken"
    if options.resume and existing.is_file():
        return Tokenizer.load(existing)
    if options.data is None:
        return Tokenizer.load(BUILTIN_TOKENIZER)
    from model.text.bpe import train_bpe

    return Tokenizer(train_bpe(train_texts, options.vocab_size - len(SPECIAL_TOKENS)))


def train(options: TrainOptions, log=print) -> dict:
    """Train and write a model folder to options.out; returns the final evaluation
    (empty on every process of a torchrun but the first)."""
    preset = PRESETS[options.preset]
    if options.batch_size:
        preset = replace(preset, batch_size=options.batch_size)
    total_steps = options.steps or preset.steps
    out = Path(options.out)
    if options.resume:
        require_checkpoint(out)
    ranks = Distributed(options.device)
    device = ranks.device

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
    optimizer = torch.optim.AdamW(
        model.optimizer_groups(preset.weight_decay), lr=preset.learning_rate, betas=(0.9, 0.95)
    )
    state = start_state(out, model, optimizer, device, options.resume)

    train_ids = torch.from_numpy(train_stream.ids)
    val_ids = torch.from_numpy(val_stream.ids)
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
        log(
            f"training {model.num_parameters() / 1e6:.2f}M parameters on {device} x{ranks.world_size}, "
            f"{len(train_stream.ids):,} training tokens, {total_steps} steps of {tokens_per_step:,} tokens"
        )

    def draw_batch(seed: int) -> Batch:
        return Batch(
            *sample_batch(train_ids, preset.batch_size, config.context_length, torch.Generator().manual_seed(seed))
        )

    def estimate_val_loss() -> float:
        generator = torch.Generator().manual_seed(options.seed)  # same batches every time
        model.eval()
        losses = []
        with torch.inference_mode(), autocast(device):
            for _ in range(preset.eval_batches):
                x, y = sample_batch(val_ids, preset.batch_size, min(config.context_length, len(val_ids) - 2), generator)
                losses.append(model(x.to(device), y.to(device))[1].item())
        model.train()
        return float(np.mean(losses))

    def write_model(state: dict) -> None:
        folder_config = make_config(config.to_dict(), options.name or out.name, {**metadata, **state})
        save_model(out, model, tokenizer, folder_config)

    run = Run(
        out=out,
        label="train",
        steps=total_steps,
        eval_every=preset.eval_every,
        grad_clip=preset.grad_clip,
        seed=options.seed,
        learning_rate=lambda step: learning_rate(step, preset, total_steps),
        draw_batch=draw_batch,
        validation_loss=estimate_val_loss,
        validation_name="val loss",
        write_outputs=write_model,
        options=asdict(options),
        resume=options.resume,
        compile=options.compile,
    )
    state = run_steps(run, model, optimizer, ranks, state)

    result = {}
    if ranks.enabled:
        metadata["replicas_in_sync"] = ranks.replicas_in_sync(model)
    if ranks.is_main:
        result = evaluate_model(model, val_stream.ids, val_stream.n_chars, device)
        metadata["validation"] = result
        metadata["tokens_per_second"] = state["tokens_seen"] / max(state["elapsed_s"], 1e-9)
        write_model(state)
        log(
            f"validation: {result['nats_per_token']:.4f} nats/token, {result['nats_per_char']:.4f} nats/char, "
            f"perplexity {result['perplexity']:.2f}; model written to {out}"
        )
    ranks.close()
    return result
