"""Chat fine-tuning: teach a base model the chat format with LoRA adapters
(or, for comparison, by updating every weight).

The data is the dialogue of the built-in plays (model.training.dialogue: the training
part of each work for training, its held-out part for validation) or the
user's JSONL conversations. The loss counts only assistant text and the <|end|>
closing each reply. The steps are model.training.loop's, shared with training:
AdamW with warmup and cosine decay, batches re-drawn from (seed, step, rank) so
a resumed run continues exactly, safetensors checkpoints, the progress line,
the history CSV and plot, DistributedDataParallel under torchrun.

The output folder is a model folder with the adapters merged in (plus
adapters.safetensors for a LoRA run), or with --save-adapters-only an adapters
folder: adapters.safetensors and a config.json naming the base model, which
loads as the base with the adapters merged in (model.network.model_folder).
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch

from model.network.lora import (
    ADAPTERS_FILE,
    LoRAConfig,
    add_lora,
    merged_copy,
    parse_targets,
    save_adapters,
    trainable_parameters,
)
from model.network.model_folder import (
    ADAPTERS_KEY,
    CONFIG_FILE,
    base_reference,
    load_model,
    make_config,
    save_model,
    weights_fingerprint,
    write_json_atomic,
)
from model.text.tokenizer import ASSISTANT, END_OF_TURN, SYSTEM, USER
from model.training.finetune_data import Example, encode_all, hold_out_last, make_batch, read_jsonl
from model.training.loop import (
    CHECKPOINT_DIR,
    Batch,
    Distributed,
    Run,
    cosine_schedule,
    require_checkpoint,
    run_steps,
    start_state,
)
from model.training.options import DEFAULT_FINETUNE_STEPS as DEFAULT_STEPS
from model.training.options import FinetuneOptions

LENGTH_GROUPING = 8
# what shapes the model and the data: taken from the checkpoint on --resume
RUN_DEFINING = (
    "base",
    "data",
    "lora_rank",
    "lora_alpha",
    "lora_dropout",
    "lora_targets",
    "full",
    "batch_size",
    "learning_rate",
    "max_reply_tokens",
    "seed",
    "save_adapters_only",
)


def lora_config(options: FinetuneOptions) -> LoRAConfig | None:
    """The adapters' shape; None for full fine-tuning."""
    if options.full:
        return None
    return LoRAConfig(options.lora_rank, options.lora_alpha, options.lora_dropout, parse_targets(options.lora_targets))


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


def resumed_options(options: FinetuneOptions, out: Path) -> FinetuneOptions:
    """On --resume the checkpoint decides what the run is; the command line only
    where it runs and how far (device, steps)."""
    require_checkpoint(out)
    saved = json.loads((out / CHECKPOINT_DIR / "state.json").read_text())["options"]
    known = {f.name for f in fields(FinetuneOptions)}
    steps = options.steps or saved.get("steps")
    return replace(options, steps=steps, **{k: v for k, v in saved.items() if k in RUN_DEFINING and k in known})


def chat_token_ids(tokenizer) -> tuple[int, ...]:
    """The special tokens of the chat format, whose embeddings LoRA trains too."""
    return tuple(tokenizer.special_ids[token] for token in (SYSTEM, USER, ASSISTANT, END_OF_TURN))


def describe_method(options: FinetuneOptions) -> str:
    lora = lora_config(options)
    if lora is None:
        return "full fine-tuning"
    return (
        f"LoRA (rank {lora.rank}, alpha {lora.alpha:g}, dropout {lora.dropout:g}, targets {','.join(lora.targets)}; "
        f"and the embeddings of the 4 chat tokens)"
    )


def adapters_entry(base: str, out: Path, base_model) -> dict:
    """What the config.json of an adapters folder (--save-adapters-only) says of
    its adapters and the base model they go on (see model.network.model_folder)."""
    return {
        "file": ADAPTERS_FILE,
        "base": base_reference(base, out),
        "base_fingerprint": weights_fingerprint(base_model),
    }


def finetune(options: FinetuneOptions, log=print) -> dict:
    """Fine-tune options.base for chat and write options.out; returns the final evaluation."""
    out = Path(options.out)
    if options.resume:
        options = resumed_options(options, out)
    steps = options.steps or DEFAULT_STEPS
    options = replace(options, steps=steps)
    if Path(options.base).resolve() == out.resolve():
        raise ValueError("--out must be a new folder, not the base model's")
    if options.full and options.save_adapters_only:
        raise ValueError("--save-adapters-only needs LoRA: full fine-tuning has no adapters")
    ranks = Distributed(options.device)
    device = ranks.device

    lora = lora_config(options)  # bad LoRA settings fail before anything loads
    model, tokenizer, base_config = load_model(options.base, device=device)
    base_entry = adapters_entry(options.base, out, model) if options.save_adapters_only else None
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
    state = start_state(out, model, optimizer, device, options.resume)

    pad_id = tokenizer.end_of_text_id
    eval_subset = random.Random(options.seed).sample(data.validation, min(options.eval_examples, len(data.validation)))
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
        log(
            f"data: {data.counts['train_conversations']:,} training and "
            f"{data.counts['validation_conversations']:,} validation "
            f"conversations from the {data.counts['source']} "
            f"({data.counts['left_out_too_long']:,} left out as too long); "
            f"{options.steps} steps of {options.batch_size * ranks.world_size} conversations"
        )

    def learning_rate(step: int) -> float:
        peak = options.peak_learning_rate
        return cosine_schedule(step, options.warmup_steps, peak, peak / 10, steps)

    def draw_batch(seed: int) -> Batch:
        return Batch(*make_batch(sample_examples(data.train, options.batch_size, seed), pad_id))

    def validation_loss() -> float:
        return reply_loss(model, eval_subset, pad_id, device)["loss"] if eval_subset else float("nan")

    def write_outputs(state: dict, validation: dict | None = None) -> None:
        config = make_config(
            model.config.to_dict(),
            options.name or out.name,
            {**metadata, **state, "validation": validation},
            description=f"{metadata['base']} fine-tuned for chat ({describe_method(options)})",
        )
        if lora:
            save_adapters(model, lora, out / ADAPTERS_FILE, {"base": metadata["base"]})
        if options.save_adapters_only:
            write_json_atomic(out / CONFIG_FILE, {**config, ADAPTERS_KEY: base_entry})
        else:
            save_model(out, merged_copy(model) if lora else model, tokenizer, config)

    run = Run(
        out=out,
        label="finetune",
        steps=steps,
        eval_every=options.eval_every,
        grad_clip=options.grad_clip,
        seed=options.seed,
        learning_rate=learning_rate,
        draw_batch=draw_batch,
        validation_loss=validation_loss,
        validation_name="validation loss on replies",
        write_outputs=write_outputs,
        options=asdict(options),
        resume=options.resume,
    )
    state = run_steps(run, model, optimizer, ranks, state)

    validation = None
    if ranks.is_main:
        if data.validation:  # the final number: every held-out reply
            validation = reply_loss(model, data.validation, pad_id, device)
        write_outputs(state, validation)
        kind = "adapters" if options.save_adapters_only else "model"
        log(
            f"validation loss on {len(data.validation):,} held-out replies: "
            f"{validation['loss']:.4f} nats/token; {kind} written to {out}"
            if validation
            else f"{kind} written to {out}"
        )
    ranks.close()
    return {**metadata, **state, "validation": validation}
