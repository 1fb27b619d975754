"""llama.cpp through the bindings alone (quant/llama_native.py): the high-level package stays
unimported until something asks for it, and a LoadedLlama computes what llama_cpp.Llama computes."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from quant.llama_native import LoadedLlama
from tests.helpers.paths import BUILTIN_DIR, ROOT

GGUF = BUILTIN_DIR / "shakespeare-chat-q8_0.gguf"

IMPORTS = """
import json, sys
from quant.llama_native import bindings
bindings()
light = {name: name in sys.modules for name in ("llama_cpp.llama", "llama_cpp.llama_chat_format", "jinja2")}
import llama_cpp
decode_found = callable(llama_cpp.llama_decode)
still_light = "llama_cpp.llama" not in sys.modules
version = llama_cpp.__version__  # the real __init__ runs here
from llama_cpp import Llama
print(json.dumps({"light": light, "decode_found": decode_found, "still_light": still_light,
                  "llama": Llama.__name__, "version": version}))
"""


def test_the_bindings_come_without_the_high_level_package_which_loads_when_asked():
    done = subprocess.run([sys.executable, "-c", IMPORTS], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert not any(result["light"].values())
    assert result["decode_found"] and result["still_light"]
    assert result["llama"] == "Llama" and result["version"]


def test_loaded_llama_computes_what_llama_cpp_llama_computes():
    from llama_cpp import Llama

    ids = [1, 50, 300, 7, 99, 1200, 4, 88]
    reference = Llama(model_path=str(GGUF), n_ctx=64, n_threads=1, n_threads_batch=1, logits_all=True, verbose=False)
    ours = LoadedLlama(GGUF, n_ctx=64, n_threads=1, n_threads_batch=1, logits_all=True)
    try:
        reference.eval(ids)
        ours.eval(ids)
        np.testing.assert_array_equal(ours.scores[: len(ids)], reference.scores[: len(ids)])
        assert ours.n_vocab() == reference.n_vocab() and ours.token_eos() == reference.token_eos()
        text = b"To be, or not to be"
        assert ours.tokenize(text, add_bos=False) == reference.tokenize(text, add_bos=False)
        assert ours.detokenize(ids, special=True) == reference.detokenize(ids, special=True)
    finally:
        ours.close()
        reference.close()


def test_evaluating_again_from_a_position_replaces_what_followed():
    llm = LoadedLlama(GGUF, n_ctx=64, n_threads=1, n_threads_batch=1, logits_all=True)
    try:
        llm.eval([1, 2, 3, 4])
        first = llm.scores[3].copy()
        llm.n_tokens = 2
        llm.eval([9, 9])
        assert not np.array_equal(llm.scores[3], first)
        llm.forget(0)
        llm.eval([1, 2, 3, 4])
        np.testing.assert_array_equal(llm.scores[3], first)
    finally:
        llm.close()
        llm.close()  # closing twice is harmless
