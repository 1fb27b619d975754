"""LoRA: low-rank adapters on chosen linear layers of the GPT.

A frozen linear layer W gets a trainable update (alpha / r) * B @ A, with
A (r x in) and B (out x r); dropout applies to the adapter's input only. B
starts at zero, so before the first step the adapted model computes exactly
what the base model does. After training, the update can be merged into W
(a plain GPT again, for export) or saved alone in safetensors and loaded on
top of the same base model later.

Targets name the linears of every block: qkv (the fused attention input),
proj (the attention output), up and down (the feed-forward).

A base model trained on plain text never saw the chat format's special tokens
(<|system|>, <|user|>, <|assistant|>, <|end|>): their embedding rows, which
are also the output rows deciding when a reply ends, were only ever pushed
down. So the rows of `token_ids` train along with the adapters (a gradient
mask keeps every other row of the embedding as it was); they are saved with
the adapters and written over the base's rows when the adapters are loaded.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn as nn

from model.network.files import publish_file

if TYPE_CHECKING:
    from model.network.gpt import GPT

TARGETS = {"qkv": "attn.qkv", "proj": "attn.proj", "up": "mlp.up", "down": "mlp.down"}
ADAPTERS_FILE = "adapters.safetensors"
EMBEDDING_ROWS = "token_embedding.rows"  # in the adapters file: the rows of LoRAConfig.token_ids


@dataclass(frozen=True)
class LoRAConfig:
    rank: int = 16
    alpha: float = 32.0
    dropout: float = 0.05
    targets: tuple[str, ...] = ("qkv", "proj", "up", "down")
    token_ids: tuple[int, ...] = ()  # embedding rows trained too: the chat format's special tokens

    def __post_init__(self):
        unknown = [t for t in self.targets if t not in TARGETS]
        if unknown or not self.targets:
            raise ValueError(
                f"LoRA targets must be some of {', '.join(TARGETS)}, not {','.join(self.targets) or 'none'}"
            )
        if self.rank < 1:
            raise ValueError(f"LoRA rank must be at least 1, not {self.rank}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"LoRA dropout must be in [0, 1), not {self.dropout}")

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank

    def to_metadata(self) -> dict[str, str]:
        return {"lora": json.dumps({**asdict(self), "targets": list(self.targets), "token_ids": list(self.token_ids)})}

    @classmethod
    def from_metadata(cls, metadata: dict[str, str]) -> LoRAConfig:
        values = json.loads(metadata["lora"])
        return cls(**{**values, "targets": tuple(values["targets"]), "token_ids": tuple(values.get("token_ids", ()))})


def parse_targets(text: str) -> tuple[str, ...]:
    """ "qkv,proj" -> ("qkv", "proj"); "all" -> every target."""
    if text.strip() == "all":
        return tuple(TARGETS)
    return tuple(t.strip() for t in text.split(",") if t.strip())


class LoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float):
        super().__init__()
        self.base = base
        self.scaling = alpha / rank
        self.lora_a = nn.Parameter(
            torch.empty(rank, base.in_features, device=base.weight.device, dtype=base.weight.dtype)
        )
        self.lora_b = nn.Parameter(
            torch.zeros(base.out_features, rank, device=base.weight.device, dtype=base.weight.dtype)
        )
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))  # as nn.Linear initialises its weight
        self.dropout = nn.Dropout(dropout)
        self.merged = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        if self.merged:
            return y
        return y + (self.dropout(x) @ self.lora_a.t() @ self.lora_b.t()) * self.scaling

    def delta_weight(self) -> torch.Tensor:
        return (self.lora_b @ self.lora_a) * self.scaling

    def merge(self) -> None:
        if not self.merged:
            with torch.no_grad():
                self.base.weight += self.delta_weight()
            self.merged = True


def adapted_layers(model: nn.Module) -> dict[str, LoRALinear]:
    return {name: module for name, module in model.named_modules() if isinstance(module, LoRALinear)}


def add_lora(model: GPT, config: LoRAConfig) -> GPT:
    """Freeze every weight of the GPT and wrap the target linears in adapters (in place)."""
    if adapted_layers(model):
        raise ValueError("this model already has LoRA adapters")
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    for block in model.blocks:
        for target in config.targets:
            parent_name, child_name = TARGETS[target].split(".")
            parent = getattr(block, parent_name)
            setattr(
                parent, child_name, LoRALinear(getattr(parent, child_name), config.rank, config.alpha, config.dropout)
            )
    if config.token_ids:
        train_embedding_rows(model, config.token_ids)
    return model


def train_embedding_rows(model: GPT, token_ids: tuple[int, ...]) -> None:
    """Let only these rows of the (tied) token embedding learn: the others get a
    zero gradient, which leaves them exactly as they were under AdamW without
    weight decay."""
    weight = model.token_embedding.weight
    rows = torch.zeros(weight.shape[0], 1, dtype=weight.dtype, device=weight.device)
    rows[list(token_ids)] = 1.0
    weight.requires_grad_(True)
    weight.register_hook(lambda grad: grad * rows)
    model.trained_token_ids = tuple(token_ids)


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight and unwrap it (in place): a plain GPT."""
    for name, layer in adapted_layers(model).items():
        layer.merge()
        parent_name, _, child_name = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child_name, layer.base)
    return model


def merged_copy(model: nn.Module) -> nn.Module:
    """A plain GPT with the adapters folded in; the adapted model is left as it is."""
    return merge_lora(copy.deepcopy(model))


def adapter_state(model: GPT) -> dict[str, torch.Tensor]:
    state = {
        f"{name}.{part}": getattr(layer, part).detach().cpu().contiguous()
        for name, layer in adapted_layers(model).items()
        for part in ("lora_a", "lora_b")
    }
    token_ids = getattr(model, "trained_token_ids", ())
    if token_ids:
        state[EMBEDDING_ROWS] = model.token_embedding.weight.detach()[list(token_ids)].cpu().contiguous()
    return state


def save_adapters(
    model: GPT, config: LoRAConfig, path: str | Path, extra_metadata: dict[str, str] | None = None
) -> None:
    from safetensors.torch import save_file

    path = Path(path)
    temporary = path.with_name(path.name + ".tmp")
    save_file(adapter_state(model), str(temporary), metadata={**config.to_metadata(), **(extra_metadata or {})})
    publish_file(temporary, path)


def read_adapter_config(path: str | Path) -> LoRAConfig:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
    if "lora" not in metadata:
        raise ValueError(f"{path}: not a LoRA adapters file (no 'lora' metadata)")
    return LoRAConfig.from_metadata(metadata)


def load_adapters(model: GPT, path: str | Path) -> LoRAConfig:
    """Add the saved adapters to a base GPT (in place); shapes must match the base."""
    from safetensors.torch import load_file

    config = read_adapter_config(path)
    add_lora(model, config)
    tensors = load_file(str(path))
    layers = adapted_layers(model)
    expected = {
        f"{name}.{part}": getattr(layer, part) for name, layer in layers.items() for part in ("lora_a", "lora_b")
    }
    embedding = model.token_embedding.weight
    if config.token_ids:
        expected[EMBEDDING_ROWS] = embedding.new_empty(len(config.token_ids), embedding.shape[1])
    if set(tensors) != set(expected):
        missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
        raise ValueError(
            f"{path}: adapters do not match this model (missing {missing[:2]}, unexpected {unexpected[:2]})"
        )
    with torch.no_grad():
        for key, tensor in tensors.items():
            if tensor.shape != expected[key].shape:
                raise ValueError(
                    f"{path}: {key} has shape {tuple(tensor.shape)}, this base model needs {tuple(expected[key].shape)}"
                )
            expected[key].copy_(tensor)
        if config.token_ids:
            embedding[list(config.token_ids)] = expected[EMBEDDING_ROWS]
    return config


def trainable_parameters(model: GPT) -> tuple[int, int]:
    """(trainable, total) parameter counts; the tied LM head counts once, and of
    the embedding only the rows that learn."""
    parameters = list(model.parameters())  # each once, tied weights included
    trainable = sum(p.numel() for p in parameters if p.requires_grad)
    token_ids = getattr(model, "trained_token_ids", ())
    if token_ids:
        embedding = model.token_embedding.weight
        trainable -= embedding.numel() - len(token_ids) * embedding.shape[1]
    return trainable, sum(p.numel() for p in parameters)
