"""llama.cpp's tokenizer on an exported file gives exactly our ids."""

from __future__ import annotations

import random
import unicodedata

import pytest

from quant_helpers import ROOT, exported, quant_model_dir  # noqa: F401  (a fixture)

EMOJI = ["😀", "🎭", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇬🇧", "🇯🇵", "❤️", "🤖", "🧑🏿‍💻", "☕", "✨", "🫠", "🐍", "👁‍🗨", "©️", "1️⃣", "🙂‍↔️"]
LOOKALIKES = ["<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>", "<|END|>", "< |end| >", "<|end", "end|>",
              "<||>", "<|>", "|>", "<|", "<|end|><|end|>", "<|user|>hi<|end|>", "<|im_start|>", "<s>", "</s>", "[INST]", "<<SYS>>"]
WHITESPACE = [" ", "  ", "\t", "\n", "\n\n", "\r\n", "\x0b", "\x0c", "\xa0", "\u2028", "\u3000", "\u200b", " \n ", "   \n\n  "]


def random_unicode(rng: random.Random) -> str:
    chars = []
    for _ in range(rng.randint(1, 24)):
        plane = rng.random()
        if plane < 0.5:
            cp = rng.randint(0x20, 0x2FFF)
        elif plane < 0.8:
            cp = rng.randint(0x3000, 0xFFFD)
        else:
            cp = rng.randint(0x10000, 0x10FFFF)
        if 0xD800 <= cp <= 0xDFFF:  # lone surrogates are not text (our tokenizer makes them U+FFFD)
            cp = 0xFFFD
        chars.append(chr(cp))
    return "".join(chars)


def sample_strings() -> list[str]:
    from model.training.corpus import builtin_works

    rng = random.Random(20261128)
    strings: list[str] = []
    lines = [line for work in builtin_works() for line in work.text.splitlines()]
    strings += lines[:: max(1, len(lines) // 1800)][:1800]  # corpus lines from every work
    text = builtin_works()[3].text
    for _ in range(300):  # multi-line chunks: runs of newlines and indentation
        start = rng.randrange(len(text) - 400)
        strings.append(text[start : start + rng.randint(20, 400)])
    code_lines = []
    for path in sorted((ROOT / "model").rglob("*.py")) + sorted((ROOT / "quant").glob("*.py")):
        source = path.read_text(encoding="utf-8")
        code_lines += source.splitlines()
        strings.append(source[:3000])
    strings += [line for line in code_lines if line.strip()][:900]
    for _ in range(300):
        strings.append("".join(rng.choice(EMOJI + [" ", "a", "!"]) for _ in range(rng.randint(1, 10))))
    for _ in range(300):
        cjk = "".join(chr(rng.randint(0x4E00, 0x9FFF)) for _ in range(rng.randint(1, 12)))
        kana = "".join(chr(rng.randint(0x3041, 0x30FF)) for _ in range(rng.randint(0, 6)))
        hangul = "".join(chr(rng.randint(0xAC00, 0xD7A3)) for _ in range(rng.randint(0, 6)))
        strings.append(rng.choice(["", "Hello ", "「"]) + cjk + rng.choice(["。", "、", " ", "！", "?"]) + kana + hangul)
    for _ in range(300):
        word = "".join(rng.choice("aeiouxyzAEnc") + "".join(chr(rng.randint(0x300, 0x36F)) for _ in range(rng.randint(0, 3)))
                       for _ in range(rng.randint(1, 8)))
        strings.append(word + " " + unicodedata.normalize("NFD", rng.choice(["café", "naïve", "Ångström", "über", "Dvořák", "ﬁne"])))
    for _ in range(1100):
        strings.append(random_unicode(rng))
    for _ in range(300):
        parts = [rng.choice(LOOKALIKES + WHITESPACE + ["word", "I'm", "don't", "'ll", "'VE", "123", "4567890", "x=1;"]) for _ in range(rng.randint(1, 6))]
        strings.append("".join(parts))
    strings += LOOKALIKES + WHITESPACE + ["", "a", "\x00", "\x00\x01\x7f", "'s'S'''", "1234567890" * 5, "a" * 500, " " * 100]
    return strings


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
    from model.training.dataset import BUILTIN_TOKENIZER
    from model.text.tokenizer import Tokenizer
    from quant.gguf_vocab import merges_from_ranks, split_in_two, token_bytes, token_string

    ranks = Tokenizer.load(BUILTIN_TOKENIZER).ranks
    merges = merges_from_ranks(ranks)
    assert len(merges) == sum(1 for t in ranks if len(t) > 1)  # every learned token is reachable
    for merge in merges[:200]:
        left, right = merge.split(" ")
        assert ranks[token_bytes(left) + token_bytes(right)] > max(ranks[token_bytes(left)], ranks[token_bytes(right)])
    assert all(token_bytes(token_string(bytes([b]))) == bytes([b]) for b in range(256))
    assert split_in_two(b"ab", {b"a": 0, b"b": 1, b"ab": 2}) == (b"a", b"b")
