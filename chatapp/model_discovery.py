"""Every model the picker can offer: chatapp's own (built-in and user), GGUF
files the user added by path, and GGUF models in LM Studio's and Ollama's
local folders when those exist. Nothing here loads a model."""

from __future__ import annotations

import json
import os
from pathlib import Path

from chatapp.model_registry import ModelRef, list_models

OLLAMA_MODEL_LAYER = "application/vnd.ollama.image.model"


def lm_studio_dirs() -> list[Path]:
    home = Path.home()
    return [home / ".lmstudio" / "models", home / ".cache" / "lm-studio" / "models"]


def ollama_dir() -> Path:
    return Path(os.environ.get("OLLAMA_MODELS", Path.home() / ".ollama" / "models"))


def lm_studio_models() -> list[ModelRef]:
    refs = []
    for directory in lm_studio_dirs():
        if directory.is_dir():
            refs += [ModelRef(p.stem, p, "gguf", "LM Studio") for p in sorted(directory.rglob("*.gguf"))]
    return refs


def ollama_models() -> list[ModelRef]:
    """Ollama stores GGUF weights as blobs named by digest; the manifests name them."""
    manifests, blobs = ollama_dir() / "manifests", ollama_dir() / "blobs"
    refs = []
    if not manifests.is_dir():
        return refs
    for manifest in sorted(p for p in manifests.rglob("*") if p.is_file()):
        try:
            layers = json.loads(manifest.read_text()).get("layers", [])
        except (OSError, ValueError):
            continue
        for layer in layers:
            if layer.get("mediaType") == OLLAMA_MODEL_LAYER:
                blob = blobs / layer.get("digest", "").replace(":", "-")
                if blob.is_file():
                    name = f"{manifest.parent.name}:{manifest.name}"
                    refs.append(ModelRef(name, blob, "gguf", "Ollama"))
    return refs


def added_models(paths: list[str]) -> list[ModelRef]:
    return [ModelRef(Path(p).stem, Path(p), "gguf", "added") for p in paths if Path(p).is_file()]


def discover_models(extra_paths: list[str] | None = None) -> list[ModelRef]:
    found = list_models() + added_models(extra_paths or []) + lm_studio_models() + ollama_models()
    unique, seen = [], set()
    for ref in found:
        if ref.path not in seen:
            seen.add(ref.path)
            unique.append(ref)
    return unique


def model_spec(ref: ModelRef) -> str:
    """What resolve_model needs to find this model again: its name for our own, else its path."""
    return ref.name if ref.source in ("built-in", "user") else str(ref.path)
