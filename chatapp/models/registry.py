"""What a model reference is (ModelRef), chatapp's own models (built-in and the
user's models folder), the default model, and a reference for a path.

A model is a model folder (config.json, model.safetensors, tokenizer.tiktoken)
or a GGUF file. Other programs' models are found by chatapp.models.discovery;
chatapp.models.resolve turns what a user typed into a ModelRef.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from chatapp.paths import user_models_dir
from model.network.model_folder import is_model_folder

BUILTIN_DIR = Path(__file__).parent.parent / "builtin"
DEFAULT_MODEL = "shakespeare-chat"


# llama.cpp's gguf-split names: model-00001-of-00003.gguf, model-00002-of-00003.gguf, ...
SPLIT_PART = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)


class ModelNotFound(ValueError):
    pass


def is_later_split_part(path: Path) -> bool:
    """A second or later part of a multi-part GGUF: the first part stands for the model."""
    match = SPLIT_PART.search(path.name)
    return match is not None and int(match.group(1)) != 1


def split_parts(path: Path) -> list[Path]:
    """Every part of a multi-part GGUF whose first part is `path` (just [path] for a whole file)."""
    match = SPLIT_PART.search(path.name)
    if match is None:
        return [path]
    prefix, count = path.name[: match.start()], match.group(2)
    return [path.with_name(f"{prefix}-{part:05d}-of-{count}{path.suffix}") for part in range(1, int(count) + 1)]


@dataclass(frozen=True)
class ModelRef:
    name: str
    path: Path
    kind: str  # "folder" or "gguf"
    # "built-in", "user", "path", "added", "opened" (a GGUF once opened by path), "LM Studio", "Ollama", "Hugging Face"
    source: str

    @property
    def size_bytes(self) -> int:
        """Bytes on disk: a folder's files, or every part of a GGUF; 0 when it cannot be read."""
        try:
            if self.path.is_dir():
                return sum(f.stat().st_size for f in self.path.iterdir() if f.is_file())
            return sum(part.stat().st_size for part in split_parts(self.path) if part.is_file())
        except OSError:
            return 0


def _scan(directory: Path, source: str) -> list[ModelRef]:
    try:
        entries = sorted(directory.iterdir()) if directory.is_dir() else []
    except OSError:  # an unreadable models folder lists nothing rather than failing every command
        return []
    refs = []
    for entry in entries:
        if entry.is_dir() and is_model_folder(entry):
            refs.append(ModelRef(entry.name, entry, "folder", source))
        elif entry.is_file() and entry.suffix.lower() == ".gguf" and not is_later_split_part(entry):
            refs.append(ModelRef(entry.stem, entry, "gguf", source))
    return refs


def list_models() -> list[ModelRef]:
    return builtin_models() + _scan(user_models_dir(), "user")


def builtin_models() -> list[ModelRef]:
    """The shipped models; without PyTorch, a model folder that has a built-in GGUF is that GGUF, under
    the folder's name (runnable_without_torch), and the GGUF is not listed again under its own."""
    builtin = _scan(BUILTIN_DIR, "built-in")
    if torch_available():
        return builtin
    runnable = [runnable_without_torch(ref) for ref in builtin]
    stand_ins = {ref.path for ref in runnable if ref.kind == "gguf" and ref.name != ref.path.stem}
    return [ref for ref in runnable if not (ref.path in stand_ins and ref.name == ref.path.stem)]


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


TORCH_EXTRA = "pip install 'chatapp[torch]'"
CPU_TORCH_INDEX = "https://download.pytorch.org/whl/cpu"


def torch_missing(what: str) -> str:
    """`what needs PyTorch`, and what to install, in one line (the light install and the bundle lack it)."""
    if getattr(sys, "frozen", False):  # the desktop bundle (PyInstaller): nothing can be added to it
        return (
            f"{what} needs PyTorch, which the desktop bundle lacks (it runs GGUF models on llama.cpp); "
            f"chatapp with PyTorch: {TORCH_EXTRA}"
        )
    return (
        f"{what} needs PyTorch, which this install lacks: {TORCH_EXTRA} "
        f"(on Linux without an NVIDIA GPU add --extra-index-url {CPU_TORCH_INDEX} for the CPU build)"
    )


def builtin_gguf(name: str) -> ModelRef | None:
    """The built-in GGUF file of the built-in model `name` (`NAME.gguf`, else `NAME-q8_0.gguf`, else any
    `NAME-<type>.gguf`), named `name`: the one model goes by one name in every install."""
    named = sorted(
        (m for m in _scan(BUILTIN_DIR, "built-in") if m.kind == "gguf" and gguf_of_model(m.name, name)),
        key=lambda m: (m.name != name, m.name != f"{name}-q8_0", m.name),
    )
    return replace(named[0], name=name) if named else None


def gguf_of_model(gguf_name: str, name: str) -> bool:
    return gguf_name == name or gguf_name.startswith(name + "-")


def builtin_folder(name: str) -> ModelRef | None:
    """The built-in model folder `name`, whether or not PyTorch can run it (exporting it needs none)."""
    return next((m for m in _scan(BUILTIN_DIR, "built-in") if m.kind == "folder" and m.name == name), None)


def runnable_without_torch(ref: ModelRef) -> ModelRef:
    """Without PyTorch, a built-in model folder runs as its built-in GGUF (the light install ships both)."""
    if ref.kind != "folder" or ref.source != "built-in" or torch_available():
        return ref
    return builtin_gguf(ref.name) or ref


def default_model() -> ModelRef:
    """The built-in model, named DEFAULT_MODEL: its folder (torch engine) when PyTorch is installed, else
    its GGUF file (see builtin_gguf).

    Without torch and without the model's GGUF, any built-in GGUF (a bundle built with --model ships
    exactly one), under its own name.
    """
    builtin = _scan(BUILTIN_DIR, "built-in")
    folders = [m for m in builtin if m.kind == "folder" and m.name == DEFAULT_MODEL]
    gguf = builtin_gguf(DEFAULT_MODEL)
    named = [gguf] if gguf else []
    if torch_available():
        candidates = folders + named
    else:
        candidates = named + folders + [m for m in builtin if m.kind == "gguf"]
    if candidates:
        return candidates[0]
    for ref in _scan(user_models_dir(), "user"):  # a checkout without the built-in model, but a user copy of it
        if ref.name == DEFAULT_MODEL:
            return ref
    names = ", ".join(sorted(m.name for m in builtin)) or "none"
    raise ModelNotFound(
        f"the built-in model {DEFAULT_MODEL!r} is missing from {BUILTIN_DIR} (built-in models: {names})"
    )
