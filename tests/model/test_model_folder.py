import json
import shutil

import pytest
import torch

from model.network.model_folder import ModelFolderError, load_model
from tests.helpers.model_folders import make_adapters_folder


@pytest.fixture
def folder(tiny_model_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_model_dir, copy, ignore=shutil.ignore_patterns("checkpoint"))
    return copy


def test_load_round_trip(folder, tiny_model_dir):
    model, tokenizer, config = load_model(folder)
    assert config["format"] == "chatapp-gpt" and tokenizer.vocab_size == model.config.vocab_size
    assert model.lm_head.weight is model.token_embedding.weight
    fp16, _, _ = load_model(folder, dtype=torch.float16)
    assert fp16.token_embedding.weight.dtype == torch.float16


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda f: (f / "model.safetensors").unlink(), "model.safetensors: missing"),
        (
            lambda f: (f / "model.safetensors").write_bytes((f / "model.safetensors").read_bytes()[:5000]),
            "model.safetensors: unreadable or truncated",
        ),
        (lambda f: (f / "config.json").write_text("{nope"), "config.json: not valid JSON"),
        (lambda f: (f / "config.json").unlink(), "config.json: missing"),
        (lambda f: (f / "tokenizer.tiktoken").unlink(), "tokenizer.tiktoken: tokenizer file is missing"),
        (
            lambda f: (f / "tokenizer.tiktoken").write_text(
                "\n".join((f / "tokenizer.tiktoken").read_text().splitlines()[:-10])
            ),
            "tokenizer.tiktoken: 4086 tokens",
        ),
    ],
)
def test_damaged_folders_give_one_line_errors(folder, damage, message):
    damage(folder)
    with pytest.raises(ModelFolderError) as error:
        load_model(folder)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_mismatched_architecture(folder):
    config = json.loads((folder / "config.json").read_text())
    config["architecture"]["n_embd"] = 128
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFolderError, match="shape"):
        load_model(folder)


def test_saved_weights_are_readable_as_any_new_file(tmp_path, folder):
    """safetensors creates its file 0600; a model folder is copied and shared like any other."""
    import os
    import stat

    from model.network.model_folder import save_model

    model, tokenizer, config = load_model(folder)
    old_umask = os.umask(0o022)
    try:
        save_model(tmp_path / "saved", model, tokenizer, config)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE((tmp_path / "saved" / "model.safetensors").stat().st_mode) == 0o644


# --- adapters folders: LoRA adapters that load as their base model with the adapters merged in ---


def logits(model):
    return model(torch.tensor([[4092, 10, 20, 30, 4095]]))[0]


def test_an_adapters_folder_loads_as_the_merged_model(folder, tmp_path):
    from model.network.lora import merged_copy

    adapted = make_adapters_folder(folder, tmp_path / "chat")
    assert {p.name for p in (tmp_path / "chat").iterdir()} == {"config.json", "adapters.safetensors"}
    model, tokenizer, config = load_model(tmp_path / "chat")
    assert config["name"] == "chat-adapters" and config["adapters"]["base"] == "../copy"  # a sibling: relative
    assert tokenizer.vocab_size == model.config.vocab_size
    assert model.lm_head.weight is model.token_embedding.weight
    assert all(p.requires_grad for p in model.parameters())  # a plain GPT, as any folder gives
    torch.testing.assert_close(logits(model), logits(merged_copy(adapted)), atol=1e-5, rtol=0)
    assert not torch.allclose(logits(model), logits(load_model(folder)[0]), atol=1e-3)
    half, _, _ = load_model(tmp_path / "chat", dtype=torch.float16)
    assert half.token_embedding.weight.dtype == torch.float16


def test_the_base_is_found_by_relative_or_absolute_path_or_built_in_name(folder, tmp_path):
    from chatapp.models.registry import BUILTIN_DIR
    from model.network.model_folder import BUILTIN_MODELS_DIR, base_reference

    make_adapters_folder(folder, tmp_path / "chat")
    moved = tmp_path / "moved"
    moved.mkdir()
    shutil.move(folder, moved / "copy")
    shutil.move(tmp_path / "chat", moved / "chat")
    expected = logits(load_model(moved / "chat")[0])  # they moved together: "../copy" still finds the base

    elsewhere = tmp_path / "elsewhere" / "chat"
    shutil.copytree(moved / "chat", elsewhere)
    with pytest.raises(ModelFolderError, match="the base model '../copy' of these adapters is not found"):
        load_model(elsewhere)
    config = json.loads((elsewhere / "config.json").read_text())
    config["adapters"]["base"] = str(moved / "copy")
    (elsewhere / "config.json").write_text(json.dumps(config))
    torch.testing.assert_close(logits(load_model(elsewhere)[0]), expected, atol=0, rtol=0)

    assert BUILTIN_MODELS_DIR == BUILTIN_DIR.resolve()
    assert base_reference(BUILTIN_DIR / "shakespeare-base", tmp_path / "x") == "shakespeare-base"
    assert base_reference(moved / "copy", tmp_path / "x") == str(moved / "copy")
    if (
        BUILTIN_DIR / "shakespeare-base"
    ).is_dir():  # found by name: the built-in base, whose shapes are not these adapters'
        config["adapters"]["base"] = "shakespeare-base"
        del config["adapters"]["base_fingerprint"]
        (elsewhere / "config.json").write_text(json.dumps(config))
        with pytest.raises(
            ModelFolderError, match=r"adapters do not match this model .*\(base model .*shakespeare-base\)"
        ):
            load_model(elsewhere)


def test_adapters_refuse_a_changed_base_and_a_missing_file(folder, tmp_path):
    from safetensors.torch import load_file, save_file

    make_adapters_folder(folder, tmp_path / "chat")
    weights = load_file(str(folder / "model.safetensors"))
    weights["ln_f.weight"] = weights["ln_f.weight"] + 0.01  # the base trained on since
    save_file(weights, str(folder / "model.safetensors"))
    with pytest.raises(ModelFolderError, match="has changed since these adapters were trained on it") as error:
        load_model(tmp_path / "chat")
    assert "\n" not in str(error.value)
    (tmp_path / "chat" / "adapters.safetensors").unlink()
    config = json.loads((tmp_path / "chat" / "config.json").read_text())
    del config["adapters"]["base_fingerprint"]
    (tmp_path / "chat" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFolderError, match="adapters.safetensors: missing"):
        load_model(tmp_path / "chat")


def test_save_merged_writes_a_plain_model_folder(folder, tmp_path):
    from model.network.model_folder import save_merged

    make_adapters_folder(folder, tmp_path / "chat")
    save_merged(tmp_path / "chat", tmp_path / "merged")
    model, _, config = load_model(tmp_path / "merged")
    assert "adapters" not in config and config["name"] == "chat-adapters"
    torch.testing.assert_close(logits(model), logits(load_model(tmp_path / "chat")[0]), atol=0, rtol=0)
