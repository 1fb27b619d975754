"""`chatapp eval`: the same figures for a model folder (torch) or a GGUF file (llama.cpp)."""

from __future__ import annotations

from chatapp.model_registry import ModelRef
from model.dataset import load_split


def evaluate_ref(ref: ModelRef, data: str | None = None, device: str = "auto") -> dict:
    validation = load_split(data).validation
    if ref.kind == "gguf":
        from quant.evaluate import evaluate_gguf

        return evaluate_gguf(ref.path, validation)
    from model.dataset import encode_works
    from model.device import resolve_device
    from model.evaluate import evaluate_model
    from model.model_folder import load_model

    device = resolve_device(device)
    model, tokenizer, _ = load_model(ref.path, device=device)
    stream = encode_works(validation, tokenizer)
    return evaluate_model(model, stream.ids, stream.n_chars, device)
