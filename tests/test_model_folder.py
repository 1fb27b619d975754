import json
import shutil

import pytest
import torch

from model.network.model_folder import ModelFolderError, load_model


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


@pytest.mark.parametrize("damage, message", [
    (lambda f: (f / "model.safetensors").unlink(), "model.safetensors: missing"),
    (lambda f: (f / "model.safetensors").write_bytes((f / "model.safetensors").read_bytes()[:5000]), "model.safetensors: unreadable or truncated"),
    (lambda f: (f / "config.json").write_text("{nope"), "config.json: not valid JSON"),
    (lambda f: (f / "config.json").unlink(), "config.json: missing"),
    (lambda f: (f / "tokenizer.tiktoken").unlink(), "tokenizer.tiktoken: tokenizer file is missing"),
    (lambda f: (f / "tokenizer.tiktoken").write_text("\n".join((f / "tokenizer.tiktoken").read_text().splitlines()[:-10])), "tokenizer.tiktoken: 4086 tokens"),
])
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
