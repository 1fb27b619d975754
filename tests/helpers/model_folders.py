"""Model folders made for a test."""

from __future__ import annotations

import torch

from model.network.model_folder import load_model


def make_adapters_folder(base, out):
    """Adapters with random updates (B is zero after add_lora) for the model folder `base`, written as
    `chatapp finetune --save-adapters-only` does; returns the adapted model."""
    from model.network.lora import ADAPTERS_FILE, LoRAConfig, adapted_layers, add_lora, save_adapters
    from model.network.model_folder import (
        ADAPTERS_KEY,
        base_reference,
        make_config,
        weights_fingerprint,
        write_json_atomic,
    )

    model, _, _ = load_model(base)
    entry = {"file": ADAPTERS_FILE, "base": base_reference(base, out), "base_fingerprint": weights_fingerprint(model)}
    lora = LoRAConfig(rank=2, alpha=4, dropout=0.0, targets=("qkv", "down"), token_ids=(4092, 4095))
    torch.manual_seed(3)
    add_lora(model, lora)
    with torch.no_grad():
        for layer in adapted_layers(model).values():
            layer.lora_b.normal_(std=0.05)
        model.token_embedding.weight[[4092, 4095]] += 0.5
    out.mkdir()
    save_adapters(model, lora, out / ADAPTERS_FILE)
    write_json_atomic(
        out / "config.json", {**make_config(model.config.to_dict(), "chat-adapters"), ADAPTERS_KEY: entry}
    )
    return model.eval()
