"""What `chatapp train` and `chatapp finetune` take: one dataclass each, whose
fields and defaults the command line's flags are made from (chatapp/cli.py).
Torch-free, so that help and argument checks cost no torch import."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_FINETUNE_STEPS = 600


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
