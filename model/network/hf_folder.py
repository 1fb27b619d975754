"""Our GPT in Hugging Face's GPT-2 layout: the tensor names and the config
(used by the export, quant/hf_export.py, and by the transformers oracle,
hf_convert.py), and reading back a folder that chatapp exported, so `chatapp
run`, `chat` and `eval` take it like a model folder. Torch-free (numpy):
model_folder.py turns the weights into tensors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from model.errors import one_line
from model.text.tokenizer import SPECIAL_TOKENS, Tokenizer

if TYPE_CHECKING:
    import numpy as np

HF_WEIGHTS = "model.safetensors"
HF_VOCAB = "vocab.json"
# ours -> HF's, per block; True where HF's Conv1D stores the matrix as (in, out), our nn.Linear as (out, in)
BLOCK_TENSORS = {
    "ln_1": ("ln_1", False),
    "attn.qkv": ("attn.c_attn", True),
    "attn.proj": ("attn.c_proj", True),
    "ln_2": ("ln_2", False),
    "mlp.up": ("mlp.c_fc", True),
    "mlp.down": ("mlp.c_proj", True),
}


def hf_tensor_names(n_layer: int) -> list[tuple[str, str, bool]]:
    """(HF name, our name, transposed) for every tensor (the LM head is tied: not stored)."""
    names = [
        ("transformer.wte.weight", "token_embedding.weight", False),
        ("transformer.wpe.weight", "position_embedding.weight", False),
    ]
    for i in range(n_layer):
        for ours, (theirs, transposed) in BLOCK_TENSORS.items():
            names.append((f"transformer.h.{i}.{theirs}.weight", f"blocks.{i}.{ours}.weight", transposed))
            names.append((f"transformer.h.{i}.{theirs}.bias", f"blocks.{i}.{ours}.bias", False))
    names += [("transformer.ln_f.weight", "ln_f.weight", False), ("transformer.ln_f.bias", "ln_f.bias", False)]
    return names


def gpt2_config(architecture: dict, bos_id: int | None = None, eos_id: int | None = None) -> dict:
    """GPT2Config's fields for our architecture (no dropout: for inference)."""
    return {
        "vocab_size": architecture["vocab_size"],
        "n_positions": architecture["context_length"],
        "n_embd": architecture["n_embd"],
        "n_layer": architecture["n_layer"],
        "n_head": architecture["n_head"],
        "n_inner": 4 * architecture["n_embd"],
        "activation_function": "gelu_new",  # GPT-2's tanh approximation, as ours
        "layer_norm_epsilon": architecture.get("layer_norm_epsilon", 1e-5),
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attn_pdrop": 0.0,
        "tie_word_embeddings": True,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
    }


class HFFolderError(ValueError):
    """A Hugging Face folder chatapp cannot run; a one-line message."""


def hf_config(folder: Path) -> dict | None:
    """config.json of a Hugging Face GPT-2 folder, or None if this is not one."""
    path = Path(folder) / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) and config.get("model_type") == "gpt2" else None


def is_hf_folder(folder: str | Path) -> bool:
    return hf_config(Path(folder)) is not None


def chatapp_config(folder: str | Path) -> dict:
    """Our config.json's content for a Hugging Face GPT-2 folder."""
    folder = Path(folder)
    config = hf_config(folder)
    if config is None:
        raise HFFolderError(f"{folder / 'config.json'}: not a Hugging Face GPT-2 config")
    try:
        width = int(config["n_embd"])
        architecture = {
            "vocab_size": int(config["vocab_size"]),
            "context_length": int(config["n_positions"]),
            "n_layer": int(config["n_layer"]),
            "n_head": int(config["n_head"]),
            "n_embd": width,
            "dropout": 0.0,
            "layer_norm_epsilon": float(config.get("layer_norm_epsilon", 1e-5)),
        }
    except (KeyError, TypeError, ValueError) as error:
        raise HFFolderError(f"{folder / 'config.json'}: bad GPT-2 config ({error})") from None
    if config.get("n_inner") not in (None, 4 * width) or config.get("activation_function", "gelu_new") != "gelu_new":
        raise HFFolderError(f"{folder / 'config.json'}: only GPT-2's own MLP (4 x width, gelu_new) runs here")
    exported = config.get("chatapp_export") or {}
    return {
        "format": "chatapp-gpt",
        "format_version": 1,
        "name": exported.get("name") or folder.name,
        "description": "a Hugging Face folder",
        "license": "",
        "architecture": architecture,
        "special_tokens": list(SPECIAL_TOKENS),
        "chat_format_version": exported.get("chat_format_version") or 1,
        "training": {},
        "source_format": "huggingface",
    }


def hf_tokenizer(folder: str | Path) -> Tokenizer:
    """Our tokenizer from vocab.json: byte-level tokens ranked by id, then our special tokens."""
    from model.text.byte_level import token_bytes

    path = Path(folder) / HF_VOCAB
    try:
        vocab = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise HFFolderError(f"{path}: unreadable ({error})") from None
    by_id = sorted(vocab.items(), key=lambda item: item[1])
    n_ranks = len(by_id)
    if [token for token, _ in by_id[-len(SPECIAL_TOKENS) :]] == list(SPECIAL_TOKENS):
        n_ranks -= len(SPECIAL_TOKENS)  # some writers put the added tokens in vocab.json too
    if [rank for _, rank in by_id[:n_ranks]] != list(range(n_ranks)):
        raise HFFolderError(f"{path}: token ids are not 0..{n_ranks - 1}")
    try:
        ranks = {token_bytes(token): rank for token, rank in by_id[:n_ranks]}
        return Tokenizer(ranks)
    except (KeyError, ValueError) as error:
        raise HFFolderError(f"{path}: not a chatapp byte-level vocabulary ({error})") from None


def hf_weights(folder: str | Path, n_layer: int) -> dict[str, np.ndarray]:
    """Our model.safetensors names and shapes, from HF's."""
    import numpy as np
    from safetensors.numpy import load_file

    path = Path(folder) / HF_WEIGHTS
    try:
        theirs = load_file(str(path))
    except Exception as error:  # the reader raises several kinds on damaged files
        raise HFFolderError(f"{path}: unreadable or truncated ({one_line(error)})") from None
    names = hf_tensor_names(n_layer)
    missing = sorted({hf for hf, _, _ in names} - set(theirs))
    if missing:
        raise HFFolderError(f"{path}: tensors missing ({', '.join(missing[:3])})")
    state = {}
    for hf_name, ours, transposed in names:
        values = theirs[hf_name].astype(np.float32)
        state[ours] = np.ascontiguousarray(values.T if transposed else values)
    return state
