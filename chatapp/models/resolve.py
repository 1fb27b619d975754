"""From what a user typed (a path, a name from `chatapp models`, or nothing) to a
ModelRef, and back: model_spec is what finds the same model again."""

from __future__ import annotations

from pathlib import Path

from chatapp.models import registry
from chatapp.models.discovery import discover_models
from chatapp.models.pulled import find_pulled
from chatapp.models.registry import (
    ModelNotFound,
    ModelRef,
    builtin_folder,
    default_model,
    ref_for_path,
)
from chatapp.serving.endpoint import EndpointModel


def resolve_model(spec: str | None = None, runnable: bool = True) -> ModelRef:
    """A model by path or by name; None gives the default built-in model (see default_model).

    runnable: without PyTorch, a built-in model's name gives its GGUF file, which runs on llama.cpp
    (registry.builtin_models); False gives the built-in model folder, which `chatapp export` reads
    (no spec: the built-in model's folder).
    """
    if not spec:
        folder = None if runnable else builtin_folder(registry.DEFAULT_MODEL)
        return folder or default_model()
    path = Path(spec).expanduser()
    if path.exists():
        return ref_for_path(path)
    folder = None if runnable else builtin_folder(spec)
    if folder is not None:
        return folder
    models = discover_models()  # ours first, then LM Studio's, Ollama's and the Hugging Face cache's
    for ref in models:
        if ref.name == spec:
            return ref
    pulled = find_pulled(spec)  # what `chatapp pull` fetched, by what it was pulled as: REPO:QUANT
    if pulled is not None:
        return ModelRef(pulled.name, Path(pulled.path), "gguf", "Hugging Face")
    names = ", ".join(sorted({m.name for m in models})) or "none"
    raise ModelNotFound(f"no model named {spec!r} and no such file (models: {names}; `chatapp models` lists them)")


def model_spec(ref: ModelRef | EndpointModel) -> str:
    """What finds this model again: its name for our own, its path for other programs' models, and for a
    model on a server the spec open_model takes."""
    if isinstance(ref, EndpointModel):
        return ref.spec
    return ref.name if ref.source in ("built-in", "user") else str(ref.path)
