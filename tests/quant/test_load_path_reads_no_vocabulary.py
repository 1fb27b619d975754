"""Opening a GGUF file reads its header and tensor table, never its vocabulary in Python.

gguf-py's GGUFReader builds a Python object per vocabulary entry: 13 s for a 262,144-token
vocabulary, once in the app and again in the worker, while llama.cpp loads the same file in under
a second. The check (quant.gguf_check) walks past the vocabulary with the bounded header walk, runs
once (the worker trusts the app's answer), and the engine asks llama.cpp about the few tokens that
can be special, not about all of them. Not timed: these assert what is (not) done.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from model.inference.sampling import SamplingParams
from model.text.chat_format import Message
from quant import gguf_check
from tests.helpers.foreign_gguf import FAMILIES, write_foreign_gguf
from tests.helpers.paths import BUILTIN_DIR, ROOT

BIG_VOCABULARY = 60_000  # past any toy vocabulary, small enough to write in a second


@pytest.fixture(scope="module")
def big_files(tmp_path_factory) -> dict[str, object]:
    folder = tmp_path_factory.mktemp("big-vocabulary")
    return {
        family: write_foreign_gguf(folder / f"{family}.gguf", family, vocab_size=BIG_VOCABULARY)
        for family in ("gemma", "qwen2")
    }


class NoReader:
    def __init__(self, *args, **kwargs):
        raise AssertionError("gguf.GGUFReader was constructed on the load path")


@pytest.fixture()
def no_reader(monkeypatch):
    import gguf

    monkeypatch.setattr(gguf, "GGUFReader", NoReader)
    monkeypatch.setattr(gguf.gguf_reader, "GGUFReader", NoReader)


CHECK_CHILD = """
import sys
sys.path.insert(0, {root!r})
from quant.gguf_check import check_gguf
info = check_gguf({path!r})
print(info.vocab_size, info.architecture, "gguf" in sys.modules, "numpy" in sys.modules)
"""


@pytest.mark.parametrize("family", ["gemma", "qwen2"])
def test_the_check_imports_neither_the_gguf_package_nor_numpy(big_files, family):
    child = CHECK_CHILD.format(root=str(ROOT), path=str(big_files[family]))
    out = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=120, check=True)
    vocab_size, architecture, gguf_imported, numpy_imported = out.stdout.split()
    assert (int(vocab_size), architecture) == (BIG_VOCABULARY, FAMILIES[family].architecture)
    assert (gguf_imported, numpy_imported) == ("False", "False")


def test_the_check_and_the_engine_construct_no_gguf_reader(big_files, no_reader):
    from quant.llama_engine import LlamaEngine

    for path in big_files.values():
        info = gguf_check.check_gguf(path)
        assert info.vocab_size == BIG_VOCABULARY and info.token_types_at is not None
        engine = LlamaEngine.load(path, n_threads=1)
        try:
            assert engine.n_vocab == BIG_VOCABULARY
        finally:
            engine.close()


def test_our_own_file_rebuilds_its_tokenizer_without_the_gguf_reader(no_reader):
    from quant.llama_engine import LlamaEngine

    engine = LlamaEngine.load(BUILTIN_DIR / "shakespeare-chat-q8_0.gguf", n_threads=1)
    try:
        assert engine.ours and engine.tokenizer.vocab_size == 4096
    finally:
        engine.close()


def test_the_engine_does_not_check_again_what_its_caller_checked(big_files, monkeypatch):
    from quant import llama_engine

    info = gguf_check.check_gguf(big_files["gemma"])
    calls = []
    monkeypatch.setattr(llama_engine, "check_gguf", lambda *args: calls.append(args))
    monkeypatch.setattr(llama_engine, "read_header", lambda *args: calls.append(args))
    engine = llama_engine.LlamaEngine.load(big_files["gemma"], n_threads=1, info=info)
    engine.close()
    assert calls == []


def test_the_worker_backend_checks_once_in_the_app(big_files, monkeypatch, tmp_path):
    from quant import llama_worker

    calls = []
    real_check = llama_worker.check_gguf
    monkeypatch.setattr(llama_worker, "check_gguf", lambda path: calls.append(path) or real_check(path))
    backend = llama_worker.WorkerBackend(big_files["qwen2"], log_dir=tmp_path, n_threads=1)
    try:
        reply = list(backend.chat([Message("user", "hi")], SamplingParams(max_tokens=2, seed=0)))
        assert reply and backend.threads == (1, 1)
    finally:
        backend.close()
    assert calls == [big_files["qwen2"]]


@pytest.mark.parametrize("family", list(FAMILIES) + ["big gemma", "big qwen2"])
def test_the_special_tokens_found_from_the_token_types_are_all_of_them(family, big_files, tmp_path):
    """What LlamaVocab finds by asking llama.cpp about the candidates alone is what it finds by asking
    about every token: the control tokens, the always-parsed ones and the end-of-generation ones."""
    from quant.llama_engine import LlamaVocab, special_candidates
    from quant.llama_load import load_llama

    path = big_files[family.split()[1]] if family.startswith("big") else write_foreign_gguf(tmp_path / "f.gguf", family)
    info = gguf_check.check_gguf(path)
    llm, _ = load_llama(info, 64, purpose="a test", n_threads=1)
    try:
        candidates = special_candidates(info, llm)
        assert candidates is not None and len(candidates) < 100
        fast, full = LlamaVocab(llm, candidates), LlamaVocab(llm)
        assert fast.control_tokens == full.control_tokens and fast.control_tokens
        assert fast._always_parsed == full._always_parsed
        assert fast.eog_ids == full.eog_ids
    finally:
        llm.close()
