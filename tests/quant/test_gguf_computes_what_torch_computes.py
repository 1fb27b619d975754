"""The exported model computes what the torch model computes: logits, greedy
generation, and the validation figures."""

from __future__ import annotations

import numpy as np
import pytest

from model.inference.sampling import SamplingParams
from tests.helpers.gguf_exports import BUILTIN_MODEL, exported, workdir

GREEDY_TOKENS = 100


def validation_ids(tokenizer, n: int) -> list[int]:
    from model.training.corpus import builtin_split

    text = builtin_split().validation[5].text
    return ([tokenizer.end_of_text_id] + tokenizer.encode(text))[:n]


def torch_logits(model_dir, ids: list[int]) -> np.ndarray:
    import torch

    from model.network.model_folder import load_model

    model, _, _ = load_model(model_dir)
    with torch.inference_mode():
        logits, _ = model(torch.tensor([ids]))
    return logits[0].float().numpy()


def llama_logits(path, ids: list[int], context: int) -> np.ndarray:
    from llama_cpp import Llama

    from quant.llama_log import route_logs

    route_logs(workdir() / "logs")
    llm = Llama(model_path=str(path), n_ctx=context, logits_all=True, verbose=False)
    try:
        llm.reset()
        llm.eval(ids)
        return np.array(llm.scores[: len(ids)])
    finally:
        llm.close()


def test_f32_logits_match_torch(quant_model_dir):
    from model.network.model_folder import load_tokenizer, read_config

    context = read_config(quant_model_dir)["architecture"]["context_length"]
    ids = validation_ids(load_tokenizer(quant_model_dir), context)  # the whole context: every position
    path, _ = exported(quant_model_dir, "f32")
    expected = torch_logits(quant_model_dir, ids)
    got = llama_logits(path, ids, context)
    diff = float(np.abs(got - expected).max())
    assert diff <= 2e-2, f"max |logit difference| {diff}"


def greedy(path, prompt: list[int]) -> list[int]:
    from quant.llama_engine import LlamaEngine

    backend = LlamaEngine.load(path, log_dir=workdir() / "logs")
    try:
        params = SamplingParams(temperature=0, max_tokens=GREEDY_TOKENS)
        return [
            t
            for e in backend.generate_ids(prompt, params, stop_ids=set())
            if hasattr(e, "token_ids")
            for t in e.token_ids
        ]
    finally:
        backend.close()


def test_greedy_f32_follows_the_torch_model(quant_model_dir):
    """Every greedy token llama.cpp picks is torch's argmax (up to a near-tie)."""
    from model.network.model_folder import load_tokenizer

    prompt = validation_ids(load_tokenizer(quant_model_dir), 40)
    path, _ = exported(quant_model_dir, "f32")
    tokens = greedy(path, prompt)
    assert len(tokens) == GREEDY_TOKENS
    logits = torch_logits(quant_model_dir, prompt + tokens)[len(prompt) - 1 : -1]
    chosen = logits[np.arange(len(tokens)), tokens]
    assert (chosen >= logits.max(axis=1) - 2e-2).all()


@pytest.mark.skipif(not BUILTIN_MODEL.is_dir(), reason="the shipped model is not built yet")
def test_greedy_100_tokens_identical_for_f32_f16_q8_0():
    from model.network.model_folder import load_tokenizer

    prompt = validation_ids(load_tokenizer(BUILTIN_MODEL), 40)
    runs = {kind: greedy(exported(BUILTIN_MODEL, kind)[0], prompt) for kind in ("f32", "f16", "q8_0")}
    assert len(runs["f32"]) == GREEDY_TOKENS
    assert runs["f32"] == runs["f16"] == runs["q8_0"]


@pytest.fixture(scope="module")
def some_validation_works():
    from model.training.corpus import Work
    from model.training.dataset import load_split

    works = load_split(None).validation
    return [works[0], works[7], Work(works[12].name, works[12].text[:3000])]


def test_evaluate_gguf_gives_the_torch_figures(quant_model_dir, some_validation_works):
    from model.network.model_folder import load_model
    from model.training.dataset import encode_works
    from model.training.validation_loss import evaluate_model
    from quant.gguf_validation_loss import evaluate_gguf

    path, _ = exported(quant_model_dir, "f32")
    ours = evaluate_gguf(path, some_validation_works, log_dir=workdir() / "logs")
    model, tokenizer, _ = load_model(quant_model_dir)
    stream = encode_works(some_validation_works, tokenizer)
    expected = evaluate_model(model, stream.ids, stream.n_chars)
    assert ours["tokens"] == expected["tokens"] and ours["chars"] == expected["chars"]
    assert ours["nats_per_token"] == pytest.approx(expected["nats_per_token"], rel=1e-4)
    assert ours["perplexity"] == pytest.approx(expected["perplexity"], rel=1e-3)


@pytest.mark.slow
def test_quantized_perplexity_bars(quant_model_dir, some_validation_works):
    """Q8_0 within 0.5% of F32 perplexity; Q4_K_M within 5% (the README's bars)."""
    from quant.gguf_validation_loss import evaluate_gguf

    figures = {
        kind: evaluate_gguf(exported(quant_model_dir, kind)[0], some_validation_works, log_dir=workdir() / "logs")[
            "perplexity"
        ]
        for kind in ("f32", "q8_0", "q4_k_m")
    }
    assert abs(figures["q8_0"] / figures["f32"] - 1) < 0.005, figures
    assert abs(figures["q4_k_m"] / figures["f32"] - 1) < 0.05, figures
