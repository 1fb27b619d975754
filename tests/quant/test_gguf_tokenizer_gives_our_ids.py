"""llama.cpp's tokenizer on an exported file gives exactly our ids."""

from __future__ import annotations

import pytest

from tests.helpers.gguf_exports import exported
from tests.helpers.tricky_text import sample_strings


@pytest.fixture(scope="module")
def vocab_llm(quant_model_dir):
    from llama_cpp import Llama

    from quant.llama_log import route_logs

    path, _ = exported(quant_model_dir, "f32")
    route_logs(path.parent / "logs")
    return Llama(model_path=str(path), vocab_only=True, verbose=False)


def test_llama_cpp_tokenizes_like_tiktoken(quant_model_dir, vocab_llm):
    from model.network.model_folder import load_tokenizer

    tokenizer = load_tokenizer(quant_model_dir)
    strings = sample_strings()
    assert len(strings) >= 5000
    mismatches = []
    for text in strings:
        ours = tokenizer.encode(text)
        theirs = vocab_llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)
        if ours != theirs:
            mismatches.append((text, ours, theirs))
    assert not mismatches, f"{len(mismatches)} of {len(strings)} differ; first: {mismatches[:3]!r}"


def test_tokenizer_rebuilt_from_the_file_is_ours(quant_model_dir):
    from model.network.model_folder import load_tokenizer
    from quant.gguf_check import chatapp_tokenizer

    path, _ = exported(quant_model_dir, "q8_0")
    rebuilt = chatapp_tokenizer(path)
    original = load_tokenizer(quant_model_dir)
    assert rebuilt.ranks == original.ranks
    assert rebuilt.special_ids == original.special_ids


def test_special_token_ids_and_types(quant_model_dir, vocab_llm):
    import llama_cpp

    from model.network.model_folder import load_tokenizer

    tokenizer = load_tokenizer(quant_model_dir)
    assert vocab_llm.n_vocab() == tokenizer.vocab_size
    assert vocab_llm.token_bos() == tokenizer.end_of_text_id
    assert vocab_llm.token_eos() == tokenizer.end_of_text_id
    vocab = llama_cpp.llama_model_get_vocab(vocab_llm.model)
    assert llama_cpp.llama_vocab_eot(vocab) == tokenizer.end_of_turn_id
    for text, token_id in tokenizer.special_ids.items():
        assert vocab_llm.tokenize(text.encode(), add_bos=False, special=True) == [token_id]
        assert vocab_llm.tokenize(text.encode(), add_bos=False, special=False) == tokenizer.encode(text)
    assert llama_cpp.llama_vocab_is_eog(vocab, tokenizer.end_of_turn_id)
    assert llama_cpp.llama_vocab_is_eog(vocab, tokenizer.end_of_text_id)
    assert not llama_cpp.llama_vocab_is_eog(vocab, tokenizer.special_ids["<|user|>"])
    assert not llama_cpp.llama_vocab_is_eog(vocab, 11)  # llama.cpp's default eos for a gpt2 vocabulary


def test_merges_rebuild_every_reachable_token():
    from model.text.tokenizer import Tokenizer
    from model.training.dataset import BUILTIN_TOKENIZER
    from quant.gguf_vocab import merges_from_ranks, split_in_two, token_bytes, token_string

    ranks = Tokenizer.load(BUILTIN_TOKENIZER).ranks
    merges = merges_from_ranks(ranks)
    assert len(merges) == sum(1 for t in ranks if len(t) > 1)  # every learned token is reachable
    for merge in merges[:200]:
        left, right = merge.split(" ")
        assert ranks[token_bytes(left) + token_bytes(right)] > max(ranks[token_bytes(left)], ranks[token_bytes(right)])
    assert all(token_bytes(token_string(bytes([b]))) == bytes([b]) for b in range(256))
    assert split_in_two(b"ab", {b"a": 0, b"b": 1, b"ab": 2}) == (b"a", b"b")
