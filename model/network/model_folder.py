"""A model on disk: a folder with config.json, model.safetensors and tokenizer.tiktoken.

No pickle anywhere: weights are safetensors, the rest is JSON and text. Every
problem (missing, truncated, mismatched files) raises ModelFolderError with a
one-line message naming the file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from model.text.tokenizer import SPECIAL_TOKENS, TOKENIZER_FILE, Tokenizer

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT_NAME = "chatapp-gpt"
FORMAT_VERSION = 1
CHAT_FORMAT_VERSION = 1


class ModelFolderError(ValueError):
    """A model folder that cannot be used; the message is one line for the user."""


def is_model_folder(path: str | Path) -> bool:
    return (Path(path) / CONFIG_FILE).is_file()


def read_config(folder: str | Path) -> dict:
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise ModelFolderError(f"{path}: missing (is {folder} a model folder?)")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ModelFolderError(f"{path}: not valid JSON ({error})") from None
    if config.get("format") != FORMAT_NAME or "architecture" not in config:
        raise ModelFolderError(f"{path}: not a {FORMAT_NAME} config (no 'format' or 'architecture')")
    if config.get("format_version", 0) > FORMAT_VERSION:
        raise ModelFolderError(f"{path}: format version {config['format_version']} is newer than this chatapp understands")
    return config


def load_tokenizer(folder: str | Path) -> Tokenizer:
    path = Path(folder) / TOKENIZER_FILE
    try:
        return Tokenizer.load(path)
    except ValueError as error:
        raise ModelFolderError(str(error)) from None


def publish_file(temporary: Path, path: Path) -> None:
    """Rename a finished temporary file onto its name, readable as a new file would be:
    mkstemp and safetensors both create files with mode 0600."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)
    os.replace(temporary, path)


def write_json_atomic(path: Path, data: dict) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, path)


def make_config(architecture: dict, name: str, training: dict | None = None, description: str = "") -> dict:
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "name": name,
        "description": description,
        "license": "MIT (weights); corpus in the public domain",
        "architecture": architecture,
        "special_tokens": list(SPECIAL_TOKENS),
        "chat_format_version": CHAT_FORMAT_VERSION,
        "training": training or {},
    }


def save_model(folder: str | Path, model, tokenizer: Tokenizer, config: dict, dtype=None) -> None:
    """Write the three files; weights optionally cast (e.g. torch.float16)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {
        name: (tensor.detach().to(dtype) if dtype is not None and tensor.is_floating_point() else tensor.detach()).contiguous().cpu()
        for name, tensor in model.state_dict().items()
        if name != "lm_head.weight"  # tied to token_embedding.weight
    }
    temporary = folder / (WEIGHTS_FILE + ".tmp")
    save_file(state, str(temporary), metadata={"format": FORMAT_NAME})
    publish_file(temporary, folder / WEIGHTS_FILE)
    tokenizer.save(folder / TOKENIZER_FILE)
    write_json_atomic(folder / CONFIG_FILE, config)


def load_model(folder: str | Path, device: str = "cpu", dtype=None):
    """Load (model, tokenizer, config) from a folder; the model is in eval mode."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from model.network.gpt import GPT, GPTConfig

    folder = Path(folder)
    config = read_config(folder)
    tokenizer = load_tokenizer(folder)
    try:
        architecture = GPTConfig.from_dict(config["architecture"])
    except (TypeError, ValueError) as error:
        raise ModelFolderError(f"{folder / CONFIG_FILE}: bad architecture ({error})") from None
    if architecture.vocab_size != tokenizer.vocab_size:
        raise ModelFolderError(
            f"{folder / TOKENIZER_FILE}: {tokenizer.vocab_size} tokens, but config.json says vocab_size {architecture.vocab_size}"
        )
    weights_path = folder / WEIGHTS_FILE
    if not weights_path.is_file():
        raise ModelFolderError(f"{weights_path}: missing")
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as error:
        raise ModelFolderError(f"{weights_path}: unreadable or truncated ({str(error).splitlines()[0]})") from None
    model = GPT(architecture)
    expected = {k: v.shape for k, v in model.state_dict().items() if k != "lm_head.weight"}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ModelFolderError(f"{weights_path}: tensors do not match config.json (missing {missing[:3]}, unexpected {unexpected[:3]})")
    for name, tensor in state.items():
        if tensor.shape != expected[name]:
            raise ModelFolderError(f"{weights_path}: {name} has shape {tuple(tensor.shape)}, config.json implies {tuple(expected[name])}")
    dtype = dtype or torch.float32
    model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=False)
    model.lm_head.weight = model.token_embedding.weight
    return model.to(device=device, dtype=dtype).eval(), tokenizer, config
