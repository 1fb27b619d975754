"""The GPT: GPT-2's architecture from scratch, in one readable file.

Token + learned position embeddings; pre-LayerNorm blocks of multi-head causal
self-attention (one fused QKV projection with biases, an output projection)
and a 4x feed-forward with tanh-approximate GELU; residual connections; a
final LayerNorm; an LM head tied to the token embedding. This is exactly what
llama.cpp's "gpt2" architecture computes, so the GGUF export is exact.

For generation a static, preallocated KV cache (gpt-fast's design, `new_cache`)
holds every layer's keys and values by position. `prefill(ids, cache, p)` runs
a prompt at positions p..p+len-1 in one pass and returns the last position's
logits; `decode_step(ids, position, keys, values)` runs one token with shapes
that never change (it attends over the whole cache under a position mask), so
`torch.compile` compiles it once and CUDA graphs can replay it. `decode_rows` is
the same step for parallel slots: one token in each of several sequences of a
cache made for several, each at its own position.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import cast

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
    def from_dict(cls, values: dict) -> GPTConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


@dataclass
class KVCache:
    """Keys and values for positions 0..context_length-1: one (batch, n_head, context_length,
    head_dim) tensor per layer each (one tensor per layer, so a compiled step writes in place)."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]

    def copy_from(self, other: KVCache) -> None:
        for mine, theirs in zip(self.keys + self.values, other.keys + other.values):
            mine.copy_(theirs)


def fused_on_cpu(x: torch.Tensor) -> bool:
    """Inside torch.compile on the CPU, where a decode step is written as products and sums."""
    return x.device.type == "cpu" and torch.compiler.is_compiling()


def matvec(x: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
    """layer(x) in a decode step. Compiled on the CPU, for one token, it is a product and a sum, which
    inductor fuses into one pass over the weight in its stored dtype with float32 arithmetic: on float16
    weights (a model folder's, exactly) that reads half the bytes, and measured 3x faster than
    the BLAS call. For several tokens (parallel slots) that pass runs once per token: there, as eager,
    F.linear is the fast way (8 slots: 800 -> 1,330 tokens/s)."""
    weight = layer.weight.to(x.dtype)
    if fused_on_cpu(x) and x.numel() == x.size(-1):
        y = (x.unsqueeze(-2) * weight).sum(-1)
        return y if layer.bias is None else y + layer.bias
    return F.linear(x, weight, layer.bias)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head = config.n_head
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.proj = nn.Linear(config.n_embd, config.n_embd)
        # nn.Module.__setattr__ takes any value; torch annotates it Tensor | Module
        self.proj.is_residual_projection = True  # type: ignore[assignment]
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def _heads(self, x: torch.Tensor):
        batch, length, width = x.shape
        q, k, v = self.qkv(x).split(width, dim=2)
        return (t.view(batch, length, self.n_head, -1).transpose(1, 2) for t in (q, k, v))

    def _merge_heads(self, y: torch.Tensor) -> torch.Tensor:
        batch, _, length, _ = y.shape
        return self.resid_dropout(self.proj(y.transpose(1, 2).reshape(batch, length, -1)))

    def forward(
        self,
        x: torch.Tensor,
        start_pos: int | None = None,
        keys: torch.Tensor | None = None,
        values: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Training and prefill. With a cache (keys, values: this layer's), x sits at
        positions start_pos..; its keys and values are written there first."""
        length = x.size(1)
        q, k, v = self._heads(x)
        mask, causal = None, True
        if keys is not None:
            assert start_pos is not None and values is not None, "a cache comes with its values and a position"
            end = start_pos + length
            keys[:, :, start_pos:end] = k
            values[:, :, start_pos:end] = v
            k, v = keys[:, :, :end], values[:, :, :end]
            if length == 1:
                causal = False  # one new query sees every cached position
            elif start_pos > 0:
                # queries at start_pos.. see the cached prefix and earlier new positions
                causal = False
                query_pos = torch.arange(start_pos, start_pos + length, device=x.device)
                mask = query_pos[:, None] >= torch.arange(k.size(2), device=x.device)[None, :]
        dropout = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=causal)
        return self._merge_heads(y)

    def decode(
        self, x: torch.Tensor, position: torch.Tensor, visible: torch.Tensor, keys: torch.Tensor, values: torch.Tensor
    ) -> torch.Tensor:
        """One token at `position` (a 1-element tensor) over the whole cache, positions past it
        masked (visible: bool, one per cache position): the same shapes at every position."""
        batch, _, width = x.shape
        q, k, v = matvec(x, self.qkv).split(width, dim=2)
        q, k, v = (t.view(batch, 1, self.n_head, -1).transpose(1, 2) for t in (q, k, v))
        keys[:, :, position] = k  # index_put_: compiled, it writes in place (index_copy_ copied the whole cache)
        values[:, :, position] = v
        y = attend(q, keys, values, visible.view(1, 1, 1, -1))
        return matvec(y.transpose(1, 2).reshape(batch, 1, width), self.proj)

    def decode_rows(
        self,
        x: torch.Tensor,
        positions: torch.Tensor,
        rows: torch.Tensor | None,
        written: torch.Tensor | None,
        visible: torch.Tensor,
        keys,
        values,
    ) -> torch.Tensor:
        """One token for each of n sequences (parallel slots): x (n, 1, width) at `positions` (n,), in
        the cache rows `rows` (n,) of keys and values (slots, heads, context, head_dim), None for every
        row; `written` (n,) bool, if given: the rows whose keys and values are stored (the others are
        computed and dropped); `visible` (n, context) masks each row's positions past its own."""
        n, _, width = x.shape
        q, k, v = matvec(x, self.qkv).split(width, dim=2)
        q, k, v = (t.view(n, 1, self.n_head, -1).transpose(1, 2) for t in (q, k, v))
        index = rows if rows is not None else torch.arange(n, device=x.device)
        k, v = k[:, :, 0], v[:, :, 0]
        if written is not None:
            k = torch.where(written[:, None, None], k, keys[index, :, positions])
            v = torch.where(written[:, None, None], v, values[index, :, positions])
        keys[index, :, positions] = k
        values[index, :, positions] = v
        if rows is not None:
            keys, values = keys[rows], values[rows]
        y = attend(q, keys, values, visible[:, None, None, :])
        return matvec(y.transpose(1, 2).reshape(n, 1, width), self.proj)


def attend(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
    """One query per sequence, q (batch, heads, 1, head_dim), over the cache's keys and values (batch, heads,
    positions, head_dim); `visible` (batch or 1, 1, 1, positions) masks the positions not yet written.
    Compiled on the CPU, products and sums that inductor fuses."""
    if fused_on_cpu(q):
        scores = (q * keys).sum(-1) / math.sqrt(q.size(-1))  # (batch, heads, positions)
        weights = torch.softmax(scores.masked_fill(~visible[:, :, 0], float("-inf")), dim=-1)
        return (weights.unsqueeze(-1) * values).sum(-2).unsqueeze(2)
    return F.scaled_dot_product_attention(q, keys, values, attn_mask=visible)


class FeedForward(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.up = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.down = nn.Linear(4 * config.n_embd, config.n_embd)
        # nn.Module.__setattr__ takes any value; torch annotates it Tensor | Module
        self.down.is_residual_projection = True  # type: ignore[assignment]
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.down(F.gelu(self.up(x), approximate="tanh")))

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return matvec(F.gelu(matvec(x, self.up), approximate="tanh"), self.down)


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.mlp = FeedForward(config)

    def forward(self, x: torch.Tensor, start_pos: int | None = None, keys=None, values=None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), start_pos, keys, values)
        return x + self.mlp(self.ln_2(x))

    def decode(self, x, position, visible, keys, values) -> torch.Tensor:
        x = x + self.attn.decode(self.ln_1(x), position, visible, keys, values)
        return x + self.mlp.decode(self.ln_2(x))

    def decode_rows(self, x, positions, rows, written, visible, keys, values) -> torch.Tensor:
        x = x + self.attn.decode_rows(self.ln_1(x), positions, rows, written, visible, keys, values)
        return x + self.mlp.decode(self.ln_2(x))


class GPT(nn.Module):
    trained_token_ids: tuple[int, ...]  # set by lora.train_embedding_rows: the embedding rows that learn

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

    def forward(self, ids: torch.Tensor, targets: torch.Tensor | None = None, loss_mask: torch.Tensor | None = None):
        """Logits for every position, and the mean cross-entropy if targets are given
        (loss_mask: count only positions where it is 1)."""
        logits = self.lm_head(self.ln_f(self._hidden(ids)))
        if targets is None:
            return logits, None
        losses = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.reshape(-1), reduction="none")
        if loss_mask is None:
            return logits, losses.mean()
        mask = loss_mask.reshape(-1).to(losses.dtype)
        return logits, (losses * mask).sum() / mask.sum().clamp(min=1)

    def _hidden(self, ids: torch.Tensor, cache: KVCache | None = None, start_pos: int = 0) -> torch.Tensor:
        length = ids.size(1)
        if start_pos + length > self.config.context_length:
            raise ValueError(
                f"sequence of {start_pos + length} tokens exceeds the context length {self.config.context_length}"
            )
        positions = torch.arange(start_pos, start_pos + length, device=ids.device)
        x = self.dropout(self.token_embedding(ids) + self.position_embedding(positions))
        for layer, block in enumerate(self.blocks):
            if cache is None:
                x = block(x)
            else:
                x = block(x, start_pos, cache.keys[layer], cache.values[layer])
        return x

    def new_cache(self, batch: int = 1, dtype=None) -> KVCache:
        config, weight = self.config, self.token_embedding.weight
        shape = (batch, config.n_head, config.context_length, config.head_dim)

        def zeros() -> list[torch.Tensor]:
            return [
                torch.zeros(shape, dtype=dtype or weight.dtype, device=weight.device) for _ in range(config.n_layer)
            ]

        return KVCache(zeros(), zeros())

    def prefill(self, ids: torch.Tensor, cache: KVCache, start_pos: int) -> torch.Tensor:
        """The last position's logits (batch, vocab) after ids at positions start_pos..,
        their keys and values written into the cache (which keeps positions < start_pos)."""
        x = self._hidden(ids, cache, start_pos)
        return self.lm_head(self.ln_f(x[:, -1]))

    def decode_step(
        self, ids: torch.Tensor, position: torch.Tensor, keys: list[torch.Tensor], values: list[torch.Tensor]
    ) -> torch.Tensor:
        """Logits (batch, vocab) for one token per sequence, ids (batch, 1), at `position`
        (a 1-element long tensor); keys and values are a KVCache's. Every shape is the same
        at every position, so a compiled step is compiled once."""
        visible = torch.arange(keys[0].size(2), device=ids.device) <= position
        x = self.position_embedding(position)
        x = x + self.token_embedding(ids).to(x.dtype)  # float16 in a compiled step's copy (compiled_step.py)
        for layer, block in enumerate(cast("list[Block]", self.blocks)):
            x = block.decode(x, position, visible, keys[layer], values[layer])
        return matvec(self.ln_f(x[:, -1]), self.lm_head)

    def decode_rows(
        self, ids: torch.Tensor, positions: torch.Tensor, rows: torch.Tensor, cache: KVCache
    ) -> torch.Tensor:
        """Logits (n, vocab) for one token in each of n sequences of a cache made with batch = slots:
        ids (n, 1) at `positions` (n,), sequence i in cache row rows[i] (parallel slots,
        model/inference/torch_slots.py). Eager: the rows and their positions change at every step."""
        return self._decode_rows(ids, positions, rows, None, cache.keys, cache.values)

    def decode_slots(
        self,
        ids: torch.Tensor,
        positions: torch.Tensor,
        written: torch.Tensor,
        keys: list[torch.Tensor],
        values: list[torch.Tensor],
    ) -> torch.Tensor:
        """decode_rows for every row of the cache (ids (slots, 1), positions (slots,)), storing the keys and
        values of the rows whose `written` (slots,) is True only: the same shapes at every step, so a
        compiled step of all the slots is compiled once (compiled_step.py)."""
        return self._decode_rows(ids, positions, None, written, keys, values)

    def _decode_rows(self, ids, positions, rows, written, keys, values) -> torch.Tensor:
        visible = torch.arange(keys[0].size(2), device=ids.device)[None, :] <= positions[:, None]
        x = self.position_embedding(positions).unsqueeze(1)
        x = x + self.token_embedding(ids).to(x.dtype)
        for layer, block in enumerate(cast("list[Block]", self.blocks)):
            x = block.decode_rows(x, positions, rows, written, visible, keys[layer], values[layer])
        return matvec(self.ln_f(x[:, -1]), self.lm_head)

    def optimizer_groups(self, weight_decay: float) -> list[dict]:
        """AdamW groups: decay 2-D weights (matrices, embeddings), not biases or norms."""
        params = [p for p in self.parameters() if p.requires_grad]
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
