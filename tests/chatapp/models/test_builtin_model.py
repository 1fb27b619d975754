"""The shipped chat model, for real: it is the default, it answers and stops,
through the torch engine, through llama.cpp on its shipped GGUF, and through
`chatapp run`. Sampling as the app samples (temperature 0.8, top-p 0.95), with
fixed seeds; the bar is 95% of replies ending with <|end|> (measured on 200
held-out prompts by scripts/eval_chat.py), so 4 of these 5 must."""

from __future__ import annotations

import json
import subprocess
import sys

from chatapp.models.registry import DEFAULT_MODEL, default_model
from model.inference.backend import Finished, collect_reply
from model.inference.sampling import SamplingParams
from model.text.chat_format import Message
from tests.helpers.paths import ROOT  # noqa: E402

CHAT_FOLDER = ROOT / "chatapp" / "builtin" / "shakespeare-chat"
CHAT_GGUF = ROOT / "chatapp" / "builtin" / "shakespeare-chat-q8_0.gguf"
PROMPTS = [
    ("You are Hamlet, Prince of Denmark.", "How do you like the court, my lord?"),
    ("You are Juliet, daughter to Capulet.", "Who is the young man below your window?"),
    ("You are Sir John Falstaff.", "Where were you last night, Jack?"),
    ("You are Lady Macbeth.", "The king sleeps in our house tonight."),
    (None, "Good morrow, sir. What news?"),
]


def replies(backend) -> list[tuple[str, Finished]]:
    results = []
    for seed, (system, user) in enumerate(PROMPTS):
        messages = ([Message("system", system)] if system else []) + [Message("user", user)]
        params = SamplingParams(temperature=0.8, top_p=0.95, max_tokens=200, seed=seed)
        reply = collect_reply(backend.chat(messages, params))
        results.append((reply.text, reply.finished))
    return results


def assert_answers_and_stops(results) -> None:
    stopped = [text for text, finished in results if finished.reason == "stop" and text.strip()]
    assert len(stopped) >= 4, results
    assert all(finished.completion_tokens < 200 for _, finished in results if finished.reason == "stop")


def test_the_chat_model_is_the_default():
    assert DEFAULT_MODEL == "shakespeare-chat"
    assert default_model().path == CHAT_FOLDER


def test_the_torch_engine_answers_and_stops():
    from model.inference.torch_engine import TorchEngine

    assert_answers_and_stops(replies(TorchEngine.load(CHAT_FOLDER, device="cpu")))


def test_the_shipped_gguf_is_the_shipped_folder_and_answers_and_stops():
    import numpy as np
    from gguf import GGUFReader
    from safetensors.numpy import load_file

    from quant.llama_engine import LlamaEngine

    # a GGUF left behind by an older model would differ: the final norm is stored unquantized
    gguf_norm = next(t for t in GGUFReader(CHAT_GGUF).tensors if t.name == "output_norm.weight")
    folder_norm = load_file(CHAT_FOLDER / "model.safetensors")["ln_f.weight"]
    np.testing.assert_array_equal(np.asarray(gguf_norm.data, dtype=np.float32), folder_norm.astype(np.float32))
    backend = LlamaEngine.load(CHAT_GGUF)
    try:
        assert_answers_and_stops(replies(backend))
    finally:
        backend.close()


def test_chatapp_run_answers_in_character_and_stops():
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "chatapp",
            "run",
            "--system",
            "You are Hamlet, Prince of Denmark.",
            "--seed",
            "0",
            "--json",
            "How do you like the court, my lord?",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout)
    assert result["model"] == "shakespeare-chat" and result["backend"] == "torch"
    assert result["text"].strip() and result["reason"] == "stop"
    assert "<|" not in result["text"]  # no chat-format token leaks into the reply
