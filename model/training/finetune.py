"""Chat fine-tuning: teach a base model the chat format with LoRA adapters
(or, for comparison, by updating every weight).

The data is the dialogue of the built-in plays (model.training.dialogue: the training
part of each work for training, its held-out part for validation) or the
user's JSONL conversations. The loss counts only assistant text and the <|end|>
closing each reply. The loop shares its pieces with model.training.train: AdamW with
warmup and cosine decay, batches re-drawn from (seed, step, rank) so a resumed
run continues exactly, safetensors checkpoints, the progress line, the history
CSV and plot, DistributedDataParallel under torchrun.

The output folder is a model folder with the adapters merged in (plus
adapters.safetensors for a LoRA run), or with --save-adapters-only just the
adapters and a finetune.json summary.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch

from model.network.device import resolve_device
from model.training.finetune_data import Example, encode_all, make_batch, read_jsonl, hold_out_last
from model.training.loss_history import History
from model.network.lora import ADAPTERS_FILE, LoRAConfig, add_lora, merged_copy, parse_targets, save_adapters, trainable_parameters
from model.network.model_folder import load_model, make_config, read_config, save_model, write_json_atomic
from model.training.progress import Progress
from model.text.tokenizer import ASSISTANT, END_OF_TURN, SYSTEM, USER
from model.training.train import CHECKPOINT_DIR, Distributed, cosine_schedule, load_checkpoint, save_checkpoint, step_seed

SUMMARY_FILE = "finetune.json"
DEFAULT_STEPS = 600
LENGTH_GROUPING = 8
# what shapes the model and the data: taken from the checkpoint on --resume
RUN_DEFINING = ("base", "data", "lora_rank", "lora_alpha", "lora_dropout", "lora_targets", "full", "batch_size",
                "learning_rate", "max_reply_tokens", "seed", "save_adapters_only")


@dataclass
class FinetuneOptions:
    base: str  # a model folder
    out: str
    data: str | None = None  # a JSONL file; None: dialogue from the built-in plays
    lora_rank: int = 16
    lora_alpha: float = 32.0
    lora_dropout: float = 0.05
    lora_targets: str = "qkv,proj,up,down"
    full: bool = False  # update every weight instead of training adapters
    steps: int | None = None  # None: DEFAULT_STEPS (on --resume: the checkpoint's)
    batch_size: int = 16
    learning_rate: float | None = None  # None: 1e-3 with LoRA, 1e-4 for full fine-tuning
    warmup_steps: int = 30
    grad_clip: float = 1.0
    eval_every: int = 100
    eval_examples: int = 256  # validation examples scored at each evaluation (all at the end)
    max_reply_tokens: int = 192  # longer replies are left out of the data
    device: str = "auto"
    resume: bool = False
    seed: int = 1337
    save_adapters_only: bool = False
    name: str | None = None

    @property
    def peak_learning_rate(self) -> float:
        return self.learning_rate or (1e-4 if self.full else 1e-3)

    def lora_config(self) -> LoRAConfig | None:
        if self.full:
            return None
        return LoRAConfig(self.lora_rank, self.lora_alpha, self.lora_dropout, parse_targets(self.lora_targets))


# --- data ---

@dataclass
class ChatData:
    train: list[Example]
    validation: list[Example]
    counts: dict


def load_chat_data(options: FinetuneOptions, tokenizer, context_length: int) -> ChatData:
    if options.data is None:
        from model.training.dialogue import dialogue_split

        split = dialogue_split()
        train_conversations = [c.messages for c in split.train]
        validation_conversations = [c.messages for c in split.validation]
        source = "dialogue of the built-in plays"
    else:
        train_conversations, validation_conversations = hold_out_last(read_jsonl(options.data))
        source = options.data
    limit = context_length + 1  # inputs are all ids but the last
    train, train_left_out = encode_all(train_conversations, tokenizer, limit, options.max_reply_tokens)
    validation, validation_left_out = encode_all(validation_conversations, tokenizer, limit, options.max_reply_tokens)
    if not train:
        raise ValueError(f"{source}: no conversation fits the context of {context_length} tokens")
    counts = {
        "source": source,
        "train_conversations": len(train),
        "validation_conversations": len(validation),
        "left_out_too_long": train_left_out + validation_left_out,
        "train_learned_tokens": sum(sum(e.mask) for e in train),
        "validation_learned_tokens": sum(sum(e.mask) for e in validation),
    }
    return ChatData(train, validation, counts)


def sample_examples(examples: list[Example], batch_size: int, seed: int) -> list[Example]:
    """A random batch of conversations of similar length: LENGTH_GROUPING batches'
    worth drawn, sorted by length, one slice kept. Every conversation is as
    likely as before, and a batch is mostly tokens rather than padding (86%
    instead of 40% on the plays' dialogue), so a step costs half as much."""
    chooser = random.Random(seed)
    drawn = sorted((examples[chooser.randrange(len(examples))] for _ in range(batch_size * LENGTH_GROUPING)), key=len)
    start = chooser.randrange(LENGTH_GROUPING) * batch_size
    return drawn[start : start + batch_size]


def reply_nats(model, examples: list[Example], pad_id: int, device: str, batch_size: int = 16) -> list[float]:
    """Total loss of each example's learned tokens (assistant text and its
    <|end|>), in the examples' order."""
    was_training = model.training
    model.eval()
    totals = []
    with torch.inference_mode():
        for start in range(0, len(examples), batch_size):
            x, y, mask = make_batch(examples[start : start + batch_size], pad_id)
            logits, _ = model(x.to(device))
            losses = torch.nn.functional.cross_entropy(logits.transpose(1, 2).float(), y.to(device), reduction="none")
            totals += (losses * mask.to(device)).sum(dim=1).tolist()
    model.train(was_training)
    return totals


def reply_loss(model, examples: list[Example], pad_id: int, device: str, batch_size: int = 16) -> dict:
    """Mean loss over every learned token (assistant text and its <|end|>)."""
    ordered = sorted(examples, key=len)  # similar lengths together: little padding
    total = sum(reply_nats(model, ordered, pad_id, device, batch_size))
    count = sum(sum(e.mask[1:]) for e in examples)  # a token's loss is counted where it is the target
    return {"loss": total / max(count, 1), "tokens": count, "examples": len(examples)}


# --- the run ---

def resumed_options(options: FinetuneOptions, checkpoint_dir: Path) -> FinetuneOptions:
    """On --resume the checkpoint decides what the run is; the command line only
    where it runs and how far (device, steps)."""
    state_path = checkpoint_dir / "state.json"
    if not state_path.is_file():
        raise ValueError(f"--resume: no checkpoint in {checkpoint_dir}")
    saved = json.loads(state_path.read_text())["options"]
    known = {f.name for f in fields(FinetuneOptions)}
    steps = options.steps or saved.get("steps")
    return replace(options, steps=steps, **{k: v for k, v in saved.items() if k in RUN_DEFINING and k in known})


def chat_token_ids(tokenizer) -> tuple[int, ...]:
    """The special tokens of the chat format, whose embeddings LoRA trains too."""
    return tuple(tokenizer.special_ids[token] for token in (SYSTEM, USER, ASSISTANT, END_OF_TURN))


def describe_method(options: FinetuneOptions) -> str:
    lora = options.lora_config()
    if lora is None:
        return "full fine-tuning"
    return (f"LoRA (rank {lora.rank}, alpha {lora.alpha:g}, dropout {lora.dropout:g}, targets {','.join(lora.targets)}; "
            f"and the embeddings of the 4 chat tokens)")


def finetune(options: FinetuneOptions, log=print) -> dict:
    """Fine-tune options.base for chat and write options.out; returns the final evaluation."""
    out = Path(options.out)
    checkpoint_dir = out / CHECKPOINT_DIR
    if options.resume:
        options = resumed_options(options, checkpoint_dir)
    options = replace(options, steps=options.steps or DEFAULT_STEPS)
    if Path(options.base).resolve() == out.resolve():
        raise ValueError("--out must be a new folder, not the base model's")
    if options.full and options.save_adapters_only:
        raise ValueError("--save-adapters-only needs LoRA: full fine-tuning has no adapters")
    device = resolve_device(options.device)
    ranks = Distributed(device)
    if ranks.enabled and device == "cuda":
        device = f"cuda:{ranks.local_rank}"
        torch.cuda.set_device(device)

    lora = options.lora_config()  # bad LoRA settings fail before anything loads
    base_config = read_config(options.base)
    model, tokenizer, _ = load_model(options.base, device=device)
    if lora:
        lora = replace(lora, token_ids=chat_token_ids(tokenizer))
    data = load_chat_data(options, tokenizer, model.config.context_length)
    torch.manual_seed(options.seed)  # the adapters' A matrices
    if lora:
        add_lora(model, lora)
    trainable, total = trainable_parameters(model)
    # no weight decay: a short fine-tune, and it would wear down the embedding rows LoRA leaves alone
    trainable_tensors = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable_tensors, lr=options.peak_learning_rate, betas=(0.9, 0.95), weight_decay=0.0)
    state = {"step": 0, "tokens_seen": 0, "elapsed_s": 0.0}
    if options.resume:
        state = load_checkpoint(checkpoint_dir, model, optimizer, device)
        state.pop("options", None)
    train_model = model
    if ranks.enabled:
        train_model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[ranks.local_rank] if device.startswith("cuda") else None)
    model.train()

    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda") else torch.autocast("cpu", enabled=False)
    pad_id = tokenizer.end_of_text_id
    eval_subset = random.Random(options.seed).sample(data.validation, min(options.eval_examples, len(data.validation)))
    history = History(out) if ranks.is_main else None
    if history and not options.resume:
        history.reset()
    metadata = {
        "base": base_config.get("name", Path(options.base).name),
        "method": "full" if lora is None else "lora",
        "lora": None if lora is None else {**asdict(lora), "targets": list(lora.targets)},
        "trainable_parameters": trainable,
        "parameters": total,
        "trainable_fraction": trainable / total,
        "data": data.counts,
        "steps": options.steps,
        "batch_size": options.batch_size * ranks.world_size,
        "learning_rate": options.peak_learning_rate,
        "seed": options.seed,
        "device": device,
        "world_size": ranks.world_size,
    }
    if ranks.is_main:
        out.mkdir(parents=True, exist_ok=True)
        log(f"fine-tuning {metadata['base']} on {device} x{ranks.world_size} with {describe_method(options)}")
        log(f"trainable parameters: {trainable:,} of {total:,} ({100 * trainable / total:.2f}%)")
        log(f"data: {data.counts['train_conversations']:,} training and {data.counts['validation_conversations']:,} validation "
            f"conversations from the {data.counts['source']} ({data.counts['left_out_too_long']:,} left out as too long); "
            f"{options.steps} steps of {options.batch_size * ranks.world_size} conversations")

    def write_outputs(validation: dict | None) -> None:
        summary = {**metadata, **state, "validation": validation}
        if lora:
            save_adapters(model, lora, out / ADAPTERS_FILE, {"base": metadata["base"]})
        if options.save_adapters_only:
            write_json_atomic(out / SUMMARY_FILE, summary)
        else:
            export = merged_copy(model) if lora else model
            config = make_config(model.config.to_dict(), options.name or out.name, summary,
                                 description=f"{metadata['base']} fine-tuned for chat ({describe_method(options)})")
            save_model(out, export, tokenizer, config)
        save_checkpoint(checkpoint_dir, model, optimizer, {**state, "options": asdict(options)})

    progress = Progress(options.steps, "finetune", start=state["step"]) if ranks.is_main else None
    recent_losses: list[float] = []
    run_start = time.monotonic() - state["elapsed_s"]
    validation = None
    while state["step"] < options.steps:
        step = state["step"]
        lr = cosine_schedule(step, options.warmup_steps, options.peak_learning_rate, options.peak_learning_rate / 10, options.steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = sample_examples(data.train, options.batch_size, step_seed(options.seed, step, ranks.rank))
        torch.manual_seed(step_seed(options.seed + 1, step, ranks.rank))  # dropout
        x, y, mask = make_batch(batch, pad_id)
        step_start = time.monotonic()
        with autocast:
            _, loss = train_model(x.to(device), y.to(device), loss_mask=mask.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable_tensors, options.grad_clip)
        optimizer.step()
        recent_losses.append(loss.item())
        state["step"] = step + 1
        state["tokens_seen"] += int(x.numel()) * ranks.world_size
        state["elapsed_s"] = time.monotonic() - run_start
        if progress:
            rate = x.numel() / max(time.monotonic() - step_start, 1e-9)
            progress.update(state["step"], f"loss {loss.item():.3f} {rate:,.0f} tok/s")
        last = state["step"] == options.steps
        if state["step"] % options.eval_every == 0 or last:
            if ranks.is_main:
                val_loss = reply_loss(model, eval_subset, pad_id, device)["loss"] if eval_subset else float("nan")
                train_loss = float(np.mean(recent_losses))
                recent_losses.clear()
                history.add(state["step"], state["tokens_seen"], train_loss, val_loss, lr, state["elapsed_s"])
                progress.message(f"step {state['step']}: train loss {train_loss:.4f}, validation loss on replies {val_loss:.4f}")
                if last and data.validation:  # the final number: every held-out reply
                    validation = reply_loss(model, data.validation, pad_id, device)
                write_outputs(validation)
            if ranks.enabled:
                torch.distributed.barrier()
    if progress:
        progress.close()
    if ranks.is_main:
        kind = "adapters" if options.save_adapters_only else "model"
        log(f"validation loss on {len(data.validation):,} held-out replies: "
            f"{validation['loss']:.4f} nats/token; {kind} written to {out}" if validation else f"{kind} written to {out}")
    ranks.close()
    return {**metadata, **state, "validation": validation}
