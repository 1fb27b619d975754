"""The GPT: GPT-2's architecture from scratch, in one readable file.

Token + learned position embeddings; pre-LayerNorm blocks of multi-head causal
self-attention (one fused QKV projection with biases, an output projection)
and a 4x feed-forward with tanh-approximate GELU; residual connections; a
final LayerNorm; an LM head tied to the token embedding. This is exactly what
llama.cpp's "gpt2" architecture computes, so the GGUF export is exact.

For generation each attention layer can own a static, preallocated KV cache
(gpt-fast's design): `forward(ids, start_pos=p)` writes the keys and values of
positions p..p+len-1 into the cache and attends over positions 0..p+len-1.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class GPTConfig:
    vocab_size: int = 4096
    context_length: int = 256
    n_layer: int = 6
    n_head: int = 4
    n_embd: int = 256
    dropout: float = 0.0
    layer_norm_epsilon: float = 1e-5

    def __post_init__(self):
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "GPTConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


class KVCache(nn.Module):
    """Keys and values for every position up to max_len, indexed by position."""

    def __init__(self, batch: int, n_head: int, max_len: int, head_dim: int, dtype, device):
        super().__init__()
        shape = (batch, n_head, max_len, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)

    def update(self, start: int, k: torch.Tensor, v: torch.Tensor):
        end = start + k.size(2)
        self.k[:, :, start:end] = k
        self.v[:, :, start:end] = v
        return self.k[:, :, :end], self.v[:, :, :end]


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head = config.n_head
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.proj = nn.Linear(config.n_embd, config.n_embd)
        self.proj.is_residual_projection = True
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)
        self.cache: KVCache | None = None

    def forward(self, x: torch.Tensor, start_pos: int | None = None) -> torch.Tensor:
        batch, length, width = x.shape
        q, k, v = self.qkv(x).split(width, dim=2)
        q, k, v = (t.view(batch, length, self.n_head, -1).transpose(1, 2) for t in (q, k, v))
        mask, causal = None, True
        if start_pos is not None:
            k, v = self.cache.update(start_pos, k, v)
            if length == 1:
                causal = False  # one new query sees every cached position
            elif start_pos > 0:
                # queries at start_pos.. see the cached prefix and earlier new positions
                causal = False
                query_pos = torch.arange(start_pos, start_pos + length, device=x.device)
                mask = query_pos[:, None] >= torch.arange(k.size(2), device=x.device)[None, :]
        dropout = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=causal)
        y = y.transpose(1, 2).contiguous().view(batch, length, width)
        return self.resid_dropout(self.proj(y))


class FeedForward(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.up = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.down = nn.Linear(4 * config.n_embd, config.n_embd)
        self.down.is_residual_projection = True
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.down(F.gelu(self.up(x), approximate="tanh")))


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.mlp = FeedForward(config)

    def forward(self, x: torch.Tensor, start_pos: int | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), start_pos)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.n_embd)
        self.position_embedding = nn.Embedding(config.context_length, config.n_embd)
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.token_embedding.weight  # weight tying
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        # GPT-2: N(0, 0.02); residual projections scaled by 1/sqrt(2 * n_layer)
        if isinstance(module, nn.Linear):
            std = 0.02
            if getattr(module, "is_residual_projection", False):
                std /= math.sqrt(2 * self.config.n_layer)
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        total = sum(p.numel() for p in self.parameters())
        if exclude_embeddings:
            total -= self.position_embedding.weight.numel() + self.token_embedding.weight.numel()
        return total

    def forward(
        self,
        ids: torch.Tensor,
        targets: torch.Tensor | None = None,
        start_pos: int | None = None,
        loss_mask: torch.Tensor | None = None,
    ):
        """Logits for every position, and the mean cross-entropy if targets are given.

        start_pos: use the KV caches (see setup_cache), ids sit at positions
        start_pos..start_pos+len-1. loss_mask: count only positions where it is 1.
        """
        length = ids.size(1)
        offset = start_pos or 0
        if offset + length > self.config.context_length:
            raise ValueError(f"sequence of {offset + length} tokens exceeds the context length {self.config.context_length}")
        positions = torch.arange(offset, offset + length, device=ids.device)
        x = self.dropout(self.token_embedding(ids) + self.position_embedding(positions))
        for block in self.blocks:
            x = block(x, start_pos)
        logits = self.lm_head(self.ln_f(x))
        if targets is None:
            return logits, None
        losses = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.reshape(-1), reduction="none")
        if loss_mask is None:
            return logits, losses.mean()
        mask = loss_mask.reshape(-1).to(losses.dtype)
        return logits, (losses * mask).sum() / mask.sum().clamp(min=1)

    def setup_cache(self, batch: int = 1, max_len: int | None = None, dtype=None) -> None:
        max_len = max_len or self.config.context_length
        weight = self.token_embedding.weight
        for block in self.blocks:
            block.attn.cache = KVCache(batch, self.config.n_head, max_len, self.config.head_dim, dtype or weight.dtype, weight.device)

    def optimizer_groups(self, weight_decay: float) -> list[dict]:
        """AdamW groups: decay 2-D weights (matrices, embeddings), not biases or norms."""
        params = [p for p in self.parameters() if p.requires_grad]
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
