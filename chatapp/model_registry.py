"""Finding models: the built-in ones, the user's, and paths given on the command line.

A model is a model folder (config.json, model.safetensors, tokenizer.tiktoken)
or a GGUF file. Every command that takes a model accepts a path to either, or
a name that `chatapp models` lists, and defaults to the built-in model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from chatapp.paths import user_models_dir
from model.model_folder import is_model_folder, read_config

BUILTIN_DIR = Path(__file__).parent / "builtin"
DEFAULT_MODEL = "shakespeare-base"


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


def resolve_model(spec: str | None = None) -> ModelRef:
    """A model by path or by name; None gives the default built-in model."""
    spec = spec or DEFAULT_MODEL
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
