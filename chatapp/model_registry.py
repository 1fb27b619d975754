"""Finding models: the built-in ones, the user's, and paths given on the command line.

A model is a model folder (config.json, model.safetensors, tokenizer.tiktoken)
or a GGUF file. Every command that takes a model accepts a path to either, or
a name that `chatapp models` lists, and defaults to the built-in model.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from chatapp.paths import user_models_dir
from model.model_folder import is_model_folder, read_config

BUILTIN_DIR = Path(__file__).parent / "builtin"
DEFAULT_MODEL = "shakespeare-chat"


class ModelNotFound(ValueError):
    pass


@dataclass(frozen=True)
class ModelRef:
    name: str
    path: Path
    kind: str  # "folder" or "gguf"
    source: str  # "built-in", "user" or "path"

    @property
    def size_bytes(self) -> int:
        if self.path.is_file():
            return self.path.stat().st_size
        return sum(f.stat().st_size for f in self.path.iterdir() if f.is_file())


def _scan(directory: Path, source: str) -> list[ModelRef]:
    refs = []
    if not directory.is_dir():
        return refs
    for entry in sorted(directory.iterdir()):
        if entry.is_dir() and is_model_folder(entry):
            refs.append(ModelRef(entry.name, entry, "folder", source))
        elif entry.is_file() and entry.suffix.lower() == ".gguf":
            refs.append(ModelRef(entry.stem, entry, "gguf", source))
    return refs


def list_models() -> list[ModelRef]:
    return _scan(BUILTIN_DIR, "built-in") + _scan(user_models_dir(), "user")


def ref_for_path(path: Path) -> ModelRef:
    if path.is_dir():
        if not is_model_folder(path):
            raise ModelNotFound(f"{path}: not a model folder (no config.json)")
        return ModelRef(path.name, path, "folder", "path")
    if path.suffix.lower() == ".gguf" or path.is_file():
        return ModelRef(path.stem, path, "gguf", "path")
    raise ModelNotFound(f"{path}: no such model")


def torch_available() -> bool:
    """Whether PyTorch can be imported, without importing it (the desktop bundle has none)."""
    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        return False


def default_model() -> ModelRef:
    """The built-in model: its folder (torch engine) when PyTorch is installed, else its GGUF file.

    The GGUF is `DEFAULT_MODEL.gguf` or `DEFAULT_MODEL-<type>.gguf` in the built-in folder; without
    torch and without either, any built-in GGUF (the desktop bundle ships exactly one).
    """
    builtin = _scan(BUILTIN_DIR, "built-in")
    folders = [m for m in builtin if m.kind == "folder" and m.name == DEFAULT_MODEL]
    ggufs = [m for m in builtin if m.kind == "gguf"]
    named = sorted((m for m in ggufs if m.name == DEFAULT_MODEL or m.name.startswith(DEFAULT_MODEL + "-")),
                   key=lambda m: (m.name != DEFAULT_MODEL, m.name != f"{DEFAULT_MODEL}-q8_0", m.name))
    if torch_available():
        candidates = folders + named
    else:
        candidates = named + folders + ggufs
    if candidates:
        return candidates[0]
    for ref in _scan(user_models_dir(), "user"):  # a checkout without the built-in model, but a user copy of it
        if ref.name == DEFAULT_MODEL:
            return ref
    names = ", ".join(sorted(m.name for m in builtin)) or "none"
    raise ModelNotFound(f"the built-in model {DEFAULT_MODEL!r} is missing from {BUILTIN_DIR} (built-in models: {names})")


def resolve_model(spec: str | None = None) -> ModelRef:
    """A model by path or by name; None gives the default built-in model (see default_model)."""
    if not spec:
        return default_model()
    path = Path(spec).expanduser()
    if path.exists():
        return ref_for_path(path)
    models = list_models()
    for ref in models:
        if ref.name == spec:
            return ref
    names = ", ".join(sorted({m.name for m in models})) or "none"
    raise ModelNotFound(f"no model named {spec!r} and no such file (models: {names}; `chatapp models` lists them)")


def describe(ref: ModelRef) -> str:
    if ref.kind == "folder":
        try:
            config = read_config(ref.path)
            arch = config["architecture"]
            return f"GPT {arch['n_layer']}x{arch['n_embd']}, context {arch['context_length']}"
        except ValueError as error:
            return f"unreadable ({error})"
    return "GGUF"
