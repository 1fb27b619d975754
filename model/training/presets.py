"""Named training set-ups. Widths and contexts are multiples of 256 where a
preset is meant for export (llama.cpp's K-quants need rows of 256)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Preset:
    n_layer: int
    n_head: int
    n_embd: int
    context_length: int
    dropout: float
    batch_size: int
    steps: int
    learning_rate: float
    min_learning_rate: float
    warmup_steps: int
    eval_every: int
    eval_batches: int
    weight_decay: float = 0.1
    grad_clip: float = 1.0


PRESETS = {
    # seconds on a laptop CPU; for tests and trying the pipeline
    "tiny": Preset(
        n_layer=2,
        n_head=2,
        n_embd=64,
        context_length=256,
        dropout=0.0,
        batch_size=8,
        steps=30,
        learning_rate=3e-3,
        min_learning_rate=3e-4,
        warmup_steps=5,
        eval_every=15,
        eval_batches=4,
    ),
    # the shipped model: about an hour and a half on 2 CPU cores
    "cpu": Preset(
        n_layer=6,
        n_head=4,
        n_embd=256,
        context_length=256,
        dropout=0.1,
        batch_size=16,
        steps=1000,
        learning_rate=1e-3,
        min_learning_rate=1e-4,
        warmup_steps=100,
        eval_every=100,
        eval_batches=20,
    ),
    # a larger model for a GPU
    "gpu": Preset(
        n_layer=8,
        n_head=8,
        n_embd=512,
        context_length=512,
        dropout=0.2,
        batch_size=64,
        steps=5000,
        learning_rate=6e-4,
        min_learning_rate=6e-5,
        warmup_steps=200,
        eval_every=250,
        eval_batches=40,
    ),
}
