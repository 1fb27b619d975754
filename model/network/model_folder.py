"""A model on disk: a folder with config.json, model.safetensors and tokenizer.tiktoken.

Or an adapters folder (`chatapp finetune --save-adapters-only`): config.json
and adapters.safetensors, LoRA adapters for a base model that config.json
names under "adapters". It loads like any model: the base model with the
adapters merged in.

No pickle anywhere: weights are safetensors, the rest is JSON and text. Every
problem (missing, truncated, mismatched files) raises ModelFolderError with a
one-line message naming the file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from model.errors import one_line
from model.network import hf_folder
from model.network.files import publish_file, write_json_atomic
from model.text.tokenizer import SPECIAL_TOKENS, TOKENIZER_FILE, Tokenizer

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT_NAME = "chatapp-gpt"
FORMAT_VERSION = 1
CHAT_FORMAT_VERSION = 1
ADAPTERS_KEY = "adapters"  # in an adapters folder's config.json: {"file", "base", "base_fingerprint"}
# The built-in models ship in the chatapp package, next to this one; found by
# path, as model never imports chatapp.
BUILTIN_MODELS_DIR = Path(__file__).resolve().parents[2] / "chatapp" / "builtin"


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
    if (
        isinstance(config, dict) and config.get("model_type") == "gpt2"
    ):  # a Hugging Face folder (chatapp export --format hf)
        return _from_hf(hf_folder.chatapp_config, folder)
    if not isinstance(config, dict) or config.get("format") != FORMAT_NAME or "architecture" not in config:
        raise ModelFolderError(f"{path}: not a {FORMAT_NAME} config (no 'format' or 'architecture')")
    if type(config.get("format_version", 0)) is not int:
        raise ModelFolderError(f"{path}: format_version must be an integer, got {config['format_version']!r}")
    if config.get("format_version", 0) > FORMAT_VERSION:
        raise ModelFolderError(
            f"{path}: format version {config['format_version']} is newer than this chatapp understands"
        )
    return config


def _from_hf(read, folder, *args):
    try:
        return read(folder, *args)
    except hf_folder.HFFolderError as error:
        raise ModelFolderError(str(error)) from None


def load_tokenizer(folder: str | Path) -> Tokenizer:
    path = Path(folder) / TOKENIZER_FILE
    if not path.exists() and (Path(folder) / hf_folder.HF_VOCAB).is_file():
        return _from_hf(hf_folder.hf_tokenizer, folder)
    try:
        return Tokenizer.load(path)
    except ValueError as error:
        raise ModelFolderError(str(error)) from None


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
        name: (tensor.detach().to(dtype) if dtype is not None and tensor.is_floating_point() else tensor.detach())
        .contiguous()
        .cpu()
        for name, tensor in model.state_dict().items()
        if name != "lm_head.weight"  # tied to token_embedding.weight
    }
    temporary = folder / (WEIGHTS_FILE + ".tmp")
    save_file(state, str(temporary), metadata={"format": FORMAT_NAME})
    publish_file(temporary, folder / WEIGHTS_FILE)
    tokenizer.save(folder / TOKENIZER_FILE)
    write_json_atomic(folder / CONFIG_FILE, config)


def load_model(folder: str | Path, device: str = "cpu", dtype=None):
    """Load (model, tokenizer, config) from a folder; the model is in eval mode.
    An adapters folder gives its base model with the adapters merged in."""
    import torch

    folder = Path(folder)
    config = read_config(folder)
    if ADAPTERS_KEY in config:
        model, tokenizer = load_adapted_model(folder, config)
    else:
        model, tokenizer = load_weights(folder, config)
    return model.to(device=device, dtype=dtype or torch.float32).eval(), tokenizer, config


def load_weights(folder: Path, config: dict):
    """The GPT of model.safetensors (float32, on the CPU) and the folder's tokenizer.

    config.json is checked against the file's header (names, shapes, float types)
    before the GPT is built, and the GPT is built on the meta device: a config that
    does not fit its weights costs nothing before it is refused."""
    import torch
    from safetensors import SafetensorError

    from model.network.gpt import GPT, GPTConfig

    tokenizer = load_tokenizer(folder)
    weights_path = folder / WEIGHTS_FILE
    arch = _checked_architecture(folder, config, weights_path)
    if arch["vocab_size"] != tokenizer.vocab_size:
        raise ModelFolderError(
            f"{folder / TOKENIZER_FILE}: {tokenizer.vocab_size} tokens, "
            f"but config.json says vocab_size {arch['vocab_size']}"
        )
    try:
        state = _read_state(folder, config, weights_path, arch["n_layer"])
    except (SafetensorError, OSError, ValueError) as error:
        raise ModelFolderError(f"{weights_path}: unreadable or truncated ({one_line(error)})") from None
    with torch.device("meta"):
        model = GPT(GPTConfig.from_dict(arch))
    model.load_state_dict({name: tensor.float() for name, tensor in state.items()}, strict=False, assign=True)
    model.lm_head.weight = model.token_embedding.weight  # tied; assign replaced the embedding's parameter
    return model, tokenizer


def _checked_architecture(folder: Path, config: dict, weights_path: Path) -> dict:
    """config.json's architecture, its types checked, and checked against the weights file's header."""
    from model.network import safetensors_header as header

    if not weights_path.is_file():
        raise ModelFolderError(f"{weights_path}: missing")
    huggingface = config.get("source_format") == "huggingface"
    try:
        arch = header.checked_architecture(config.get("architecture"), folder / CONFIG_FILE)
        entries = header.read_header(weights_path)
        header.check_tensors(
            weights_path, entries, arch, _hf_shapes if huggingface else header.gpt_shapes, extra_allowed=huggingface
        )
    except OSError as error:
        raise ModelFolderError(f"{weights_path}: unreadable ({error.strerror})") from None
    except header.HeaderError as error:
        raise ModelFolderError(str(error)) from None
    return arch


def _hf_shapes(arch: dict) -> dict[str, tuple[int, ...]]:
    """The tensors of a Hugging Face GPT-2 file for our architecture, in HF's names and layout."""
    from model.network.safetensors_header import gpt_shapes

    ours = gpt_shapes(arch)
    return {
        theirs: tuple(reversed(ours[name])) if transposed else ours[name]
        for theirs, name, transposed in hf_folder.hf_tensor_names(arch["n_layer"])
    }


def _read_state(folder: Path, config: dict, weights_path: Path, n_layer: int) -> dict:
    import torch
    from safetensors.torch import load_file

    if config.get("source_format") == "huggingface":
        return {
            name: torch.from_numpy(values) for name, values in _from_hf(hf_folder.hf_weights, folder, n_layer).items()
        }
    state = load_file(str(weights_path))
    state.pop("lm_head.weight", None)  # tied to the embedding
    return state


# --- adapters folders ---


def base_reference(base: str | Path, adapters_folder: str | Path) -> str:
    """How an adapters folder names its base model: a built-in model by name, a
    folder beside it by relative path (they move together), any other by absolute path."""
    base, adapters_folder = Path(base).resolve(), Path(adapters_folder).resolve()
    if base.parent == BUILTIN_MODELS_DIR:
        return base.name
    if base.parent == adapters_folder.parent:
        return os.path.join(os.pardir, base.name)
    return str(base)


def weights_fingerprint(model) -> str:
    """A short hash of a GPT's weights as float32: adapters fit only the base they were trained on."""
    import hashlib

    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        if name != "lm_head.weight":
            digest.update(name.encode())
            digest.update(tensor.detach().to(device="cpu", dtype=torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def find_base_model(folder: Path, reference: str) -> Path:
    """The base model folder an adapters folder names: a path (relative to the
    adapters folder, or absolute), else a built-in model's name."""
    by_path = (folder / Path(reference).expanduser()).resolve()
    for candidate in (by_path, BUILTIN_MODELS_DIR / reference):
        if is_model_folder(candidate):
            return candidate
    raise ModelFolderError(
        f"{folder / CONFIG_FILE}: the base model {reference!r} of these adapters is not found "
        f"(neither a model folder at {by_path} nor a built-in model)"
    )


def load_adapted_model(folder: Path, config: dict):
    """The base model with the adapters merged in (float32, on the CPU), and the base's tokenizer."""
    from safetensors import SafetensorError

    from model.network.gpt import GPT
    from model.network.lora import load_adapters, merge_lora

    adapters = config[ADAPTERS_KEY]
    if not isinstance(adapters, dict) or not {"file", "base"} <= set(adapters):
        raise ModelFolderError(f"{folder / CONFIG_FILE}: 'adapters' needs a 'file' and a 'base'")
    base_folder = find_base_model(folder, str(adapters["base"]))
    model, tokenizer, _ = load_model(base_folder)
    fingerprint = adapters.get("base_fingerprint")  # absent from a config.json written by hand
    if fingerprint and fingerprint != weights_fingerprint(model):
        raise ModelFolderError(
            f"{folder / CONFIG_FILE}: the base model {base_folder} has changed since these adapters "
            f"were trained on it (its weights differ); fine-tune it again"
        )
    adapters_path = folder / adapters["file"]
    if not adapters_path.is_file():
        raise ModelFolderError(f"{adapters_path}: missing")
    try:
        load_adapters(model, adapters_path)
    except (SafetensorError, OSError) as error:
        raise ModelFolderError(f"{adapters_path}: unreadable or truncated ({one_line(error)})") from None
    except ValueError as error:  # adapters of another shape: the base model is not theirs
        raise ModelFolderError(f"{one_line(error)} (base model {base_folder})") from None
    # a fresh GPT: the adapted one keeps its frozen weights and the gradient mask on the embedding
    merged = GPT(model.config)
    merged.load_state_dict(merge_lora(model).state_dict())
    return merged, tokenizer


def save_merged(folder: str | Path, out: str | Path) -> None:
    """A plain model folder at out from an adapters folder, for what reads
    model.safetensors itself (the GGUF export)."""
    model, tokenizer, config = load_model(folder)
    save_model(out, model, tokenizer, {k: v for k, v in config.items() if k != ADAPTERS_KEY})
