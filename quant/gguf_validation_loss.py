"""Validation figures for a GGUF file through llama.cpp: the same numbers as
model.training.validation_loss (nats per token, nats per character, perplexity) over the same
held-out stream and the same windows, so a GGUF compares with its model folder.

For our own files the stream is model.training.dataset.encode_works with our tokenizer
rebuilt from the file. A foreign file is tokenized by llama.cpp (works joined
by its end-of-sequence token) in windows of at most FOREIGN_WINDOW tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from model.training.dataset import encode_works
from model.training.validation_loss import summarize, windows
from quant.gguf_check import chatapp_tokenizer, check_gguf, read_header
from quant.llama_load import context_for, load_llama
from quant.llama_tokens import tokenize

FOREIGN_WINDOW = 512  # logits for every position: window x vocabulary floats


def window_nats(logits: np.ndarray, targets: np.ndarray) -> float:
    """Summed cross-entropy (nats) of targets under rows of logits."""
    logits = logits.astype(np.float64)
    top = logits.max(axis=1)
    log_norm = top + np.log(np.exp(logits - top[:, None]).sum(axis=1))
    return float((log_norm - logits[np.arange(len(targets)), targets]).sum())


def evaluate_gguf(
    path: str | Path,
    validation_works,
    *,
    progress: Callable[[str, int, int], None] | None = None,
    n_threads: int | None = None,
    log_dir: str | Path | None = None,
) -> dict:
    """model.training.validation_loss.summarize's dict for a GGUF file on the given works."""
    path = Path(path).expanduser()
    header = read_header(path)
    info = check_gguf(path, header)
    tokenizer = chatapp_tokenizer(path, header) if info.chatapp else None
    context = context_for(info, FOREIGN_WINDOW)
    llm, _ = load_llama(
        info, context, purpose="evaluating a GGUF file", logits_all=True, n_threads=n_threads, log_dir=log_dir
    )
    try:
        if tokenizer is not None:
            stream = encode_works(list(validation_works), tokenizer)
            ids, n_chars = stream.ids, stream.n_chars
        else:
            eos = llm.token_eos()
            import llama_cpp

            vocab = llama_cpp.llama_model_get_vocab(llm.model)
            pieces = []
            for work in validation_works:
                pieces += tokenize(vocab, work.text.encode("utf-8", errors="replace")) + [eos]
            ids, n_chars = np.asarray(pieces, dtype=np.int64), sum(len(w.text) for w in validation_works)
        if len(ids) < 2:
            raise ValueError("nothing to evaluate: the validation text has fewer than 2 tokens")
        total, count = 0.0, 0
        all_windows = list(windows(ids, context))
        for done, (inputs, targets) in enumerate(all_windows):
            llm.reset()
            llm.eval(inputs.tolist())
            total += window_nats(llm.scores[: len(inputs)], targets)
            count += len(targets)
            if progress:
                progress("evaluating", done + 1, len(all_windows))
        return summarize(total, count, n_chars)
    finally:
        if hasattr(llm, "close"):
            llm.close()
