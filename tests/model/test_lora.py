"""LoRA: step 0 is the base model, merging is exact, the base stays frozen,
adapters save and load alone."""

import pytest
import torch

from model.network.gpt import GPT, GPTConfig
from model.network.lora import (
    LoRAConfig,
    LoRALinear,
    adapted_layers,
    add_lora,
    load_adapters,
    merge_lora,
    merged_copy,
    parse_targets,
    save_adapters,
    trainable_parameters,
)

CONFIG = GPTConfig(vocab_size=64, context_length=16, n_layer=2, n_head=2, n_embd=16)


def make_base(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(CONFIG).eval()


def tokens(seed: int = 1) -> torch.Tensor:
    return torch.randint(0, CONFIG.vocab_size, (2, 12), generator=torch.Generator().manual_seed(seed))


def randomize_adapters(model: GPT, seed: int = 2) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in adapted_layers(model).values():
            layer.lora_b.copy_(torch.randn(layer.lora_b.shape, generator=generator) * 0.1)


def test_step_zero_equals_the_base_model():
    base = make_base()
    adapted = add_lora(make_base(), LoRAConfig(rank=4, alpha=8, dropout=0.0))
    x = tokens()
    assert torch.equal(adapted(x)[0], base(x)[0])


def test_merged_and_unmerged_logits_agree():
    adapted = add_lora(make_base(), LoRAConfig(rank=4, alpha=8, dropout=0.1)).eval()
    randomize_adapters(adapted)
    x = tokens()
    unmerged = adapted(x)[0]
    assert not torch.allclose(unmerged, make_base()(x)[0], atol=1e-3)  # the adapters do something
    merged = merged_copy(adapted)
    assert not adapted_layers(merged) and adapted_layers(adapted)  # a plain GPT; the original untouched
    torch.testing.assert_close(merged(x)[0], unmerged, atol=1e-5, rtol=0)
    in_place = merge_lora(adapted)
    torch.testing.assert_close(in_place(x)[0], unmerged, atol=1e-5, rtol=0)
    assert set(in_place.state_dict()) == set(make_base().state_dict())  # saves as a base model does


def test_targets_rank_and_scaling():
    model = add_lora(make_base(), LoRAConfig(rank=2, alpha=6, targets=("qkv", "down")))
    names = sorted(adapted_layers(model))
    assert names == ["blocks.0.attn.qkv", "blocks.0.mlp.down", "blocks.1.attn.qkv", "blocks.1.mlp.down"]
    layer = model.blocks[0].attn.qkv
    assert isinstance(layer, LoRALinear) and layer.scaling == 3.0
    assert layer.lora_a.shape == (2, 16) and layer.lora_b.shape == (48, 2)
    assert torch.count_nonzero(layer.lora_b) == 0
    trainable, total = trainable_parameters(model)
    per_block = 2 * (16 + 48) + 2 * (64 + 16)
    assert trainable == 2 * per_block
    assert total == make_base().num_parameters() + trainable
    assert parse_targets("all") == ("qkv", "proj", "up", "down")
    assert parse_targets("qkv, up") == ("qkv", "up")


def test_base_weights_stay_frozen():
    model = add_lora(make_base(), LoRAConfig(rank=4, alpha=4, dropout=0.0)).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    x = tokens()
    for _ in range(2):
        _, loss = model(x, x)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(".lora_" in k for k in changed)
    assert any(k.endswith("lora_b") for k in changed)


def test_dropout_is_on_the_adapter_input_only():
    torch.manual_seed(0)
    layer = LoRALinear(torch.nn.Linear(8, 6), rank=2, alpha=4, dropout=0.5).train()
    with torch.no_grad():
        layer.lora_b.normal_()
    x = torch.randn(3, 8)
    torch.manual_seed(5)
    got = layer(x)
    torch.manual_seed(5)
    dropped = torch.nn.functional.dropout(x, 0.5, training=True)
    expected = layer.base(x) + dropped @ layer.lora_a.t() @ layer.lora_b.t() * 2.0
    torch.testing.assert_close(got, expected)
    layer.eval()
    torch.testing.assert_close(layer(x), layer.base(x) + x @ layer.delta_weight().t())


def test_adapters_save_and_load_alone(tmp_path):
    adapted = add_lora(make_base(), LoRAConfig(rank=4, alpha=8, targets=("proj", "up"))).eval()
    randomize_adapters(adapted)
    path = tmp_path / "adapters.safetensors"
    save_adapters(adapted, LoRAConfig(rank=4, alpha=8, targets=("proj", "up")), path)
    from safetensors.torch import load_file

    assert all(".lora_" in k for k in load_file(str(path)))  # the adapters alone, no base weights
    fresh = make_base()
    config = load_adapters(fresh, path)
    assert config.targets == ("proj", "up") and config.rank == 4
    x = tokens()
    torch.testing.assert_close(fresh.eval()(x)[0], adapted(x)[0], atol=0, rtol=0)


def test_adapters_for_another_shape_are_refused(tmp_path):
    adapted = add_lora(make_base(), LoRAConfig(rank=4))
    path = tmp_path / "adapters.safetensors"
    save_adapters(adapted, LoRAConfig(rank=4), path)
    wider = GPT(GPTConfig(vocab_size=64, context_length=16, n_layer=2, n_head=2, n_embd=32))
    with pytest.raises(ValueError, match="shape"):
        load_adapters(wider, path)
    with pytest.raises(ValueError, match="do not match"):
        load_adapters(GPT(GPTConfig(vocab_size=64, context_length=16, n_layer=3, n_head=2, n_embd=16)), path)
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not a LoRA adapters file"):
        load_adapters(make_base(), tmp_path / "other.safetensors")


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"targets": ("qkv", "lm_head")}, "targets"),
        ({"targets": ()}, "targets"),
        ({"rank": 0}, "rank"),
        ({"dropout": 1.0}, "dropout"),
    ],
)
def test_bad_settings_are_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        LoRAConfig(**settings)


def test_adding_twice_is_refused():
    model = add_lora(make_base(), LoRAConfig())
    with pytest.raises(ValueError, match="already"):
        add_lora(model, LoRAConfig())


def test_chat_token_rows_learn_and_travel_with_the_adapters(tmp_path):
    config = LoRAConfig(rank=4, alpha=8, dropout=0.0, token_ids=(3, 5))
    model = add_lora(make_base(), config).train()
    x = tokens()
    assert torch.equal(model(x)[0], make_base()(x)[0])  # still the base model at step 0
    trainable, _ = trainable_parameters(model)
    assert trainable == sum(p.numel() for n, p in model.named_parameters() if ".lora_" in n) + 2 * 16
    embedding_before = model.token_embedding.weight.detach().clone()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    for _ in range(2):
        _, loss = model(x, x)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    changed_rows = (model.token_embedding.weight != embedding_before).any(dim=1).nonzero().flatten().tolist()
    assert changed_rows == [3, 5]  # only the chat tokens' rows, input and (tied) output alike
    assert model.lm_head.weight is model.token_embedding.weight
    model.eval()
    path = tmp_path / "adapters.safetensors"
    save_adapters(model, config, path)
    fresh = make_base()
    assert load_adapters(fresh, path).token_ids == (3, 5)
    torch.testing.assert_close(fresh.eval()(x)[0], model(x)[0], atol=0, rtol=0)
    torch.testing.assert_close(merged_copy(model)(x)[0], model(x)[0], atol=1e-5, rtol=0)
