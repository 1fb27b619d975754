"""Make a trained model folder the built-in one: weights in float16, no
checkpoint, and the validation figures of both precisions printed, so the
16-bit copy is shipped only if it keeps the quality.

    python scripts/ship_builtin.py TRAINED_FOLDER chatapp/builtin/NAME
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import torch

from model.network.model_folder import load_model, read_config, save_model, write_json_atomic
from model.training.dataset import encode_works, load_split
from model.training.validation_loss import evaluate_model

HISTORY_FILES = ("history.csv", "history.png", "finetune.json")  # the training record, when there is one


def main() -> None:
    source, target = Path(sys.argv[1]), Path(sys.argv[2])
    model, tokenizer, config = load_model(source)
    stream = encode_works(load_split(None).validation, tokenizer)
    full = evaluate_model(model, stream.ids, stream.n_chars)
    if target.exists():
        shutil.rmtree(target)
    save_model(target, model, tokenizer, config, dtype=torch.float16)
    for name in HISTORY_FILES:
        if (source / name).is_file():
            shutil.copy(source / name, target / name)
    half_model, _, _ = load_model(target)
    half = evaluate_model(half_model, stream.ids, stream.n_chars)
    shipped = read_config(target)
    # a base model's training.validation is this same held-out text; a fine-tuned model's is its
    # loss on held-out replies, kept as it is
    key = "validation" if "method" not in shipped["training"] else "validation_text"
    shipped["training"][key] = half
    shipped["training"][f"{key}_float32"] = full
    shipped["weights_dtype"] = "float16"
    write_json_atomic(target / "config.json", shipped)
    print(
        json.dumps(
            {"float32": full, "float16": half, "size_mb": sum(f.stat().st_size for f in target.iterdir()) / 1e6},
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
