"""The flags of `chatapp train` and `chatapp finetune`, made from the fields of
model.training.options (chatapp/cli.py builds them; chatapp/commands.py reads them back)."""

from __future__ import annotations

import argparse

# `chatapp train` and `chatapp finetune`: (flag, its field in model.training.options's TrainOptions or
# FinetuneOptions, type, what it does). As with sampling, each is stored under the field's name, None
# when not given, so the dataclass's default applies, and --help shows that default. A type of bool
# is a switch; a flag without a default in the dataclass is required.
TRAIN_OPTIONS = (
    ("--data", "data", str, "a .txt file or a folder of them (default: the built-in Shakespeare corpus)"),
    ("--preset", "preset", "preset", "model size and schedule"),
    ("--out", "out", str, "the model folder to write"),
    ("--steps", "steps", "at_least_one", "optimizer steps (default: the preset's)"),
    ("--batch-size", "batch_size", "at_least_one", "sequences per step (default: the preset's)"),
    ("--resume", "resume", bool, "continue from the checkpoint in --out"),
    ("--seed", "seed", int, "the random seed"),
    ("--vocab-size", "vocab_size", int, "tokenizer size when training on --data"),
    ("--compile", "compile", bool, "use torch.compile"),
    ("--name", "name", str, "the model's name (default: the folder's name)"),
)
FINETUNE_OPTIONS = (
    ("--out", "out", str, "the folder to write (a model folder, or adapters with --save-adapters-only)"),
    (
        "--data",
        "data",
        str,
        'a JSONL file of {"messages": [{"role", "content"}]} (default: dialogue from the built-in plays)',
    ),
    ("--lora-rank", "lora_rank", int, "rank r of the adapters"),
    ("--lora-alpha", "lora_alpha", float, "adapter scaling alpha; the update is scaled by alpha/r"),
    ("--lora-dropout", "lora_dropout", float, "dropout on the adapters' input"),
    ("--lora-targets", "lora_targets", str, "layers to adapt, some of qkv,proj,up,down or all"),
    ("--full", "full", bool, "update every weight instead of training adapters"),
    ("--steps", "steps", "at_least_one", "optimizer steps (default: DEFAULT_FINETUNE_STEPS)"),
    ("--batch-size", "batch_size", "at_least_one", "conversations per step"),
    ("--lr", "learning_rate", float, "peak learning rate (default 1e-3 with LoRA, 1e-4 with --full)"),
    ("--resume", "resume", bool, "continue from the checkpoint in --out, with its settings"),
    ("--seed", "seed", int, "the random seed"),
    ("--save-adapters-only", "save_adapters_only", bool, "write only the adapters, not the merged model"),
    ("--name", "name", str, "the model's name (default: the folder's name)"),
)


def option_values(args: argparse.Namespace, table) -> dict:
    """The options given on the command line, by field name; the dataclass's defaults fill the rest."""
    return {field: getattr(args, field) for _, field, _, _ in table if getattr(args, field, None) is not None}
