import random
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model.text.bpe import count_words, reference_encode, train_bpe
from model.text.tokenizer import SPECIAL_TOKENS, Tokenizer, load_ranks, replace_lone_surrogates
from model.training.corpus import builtin_split
from model.training.dataset import BUILTIN_TOKENIZER


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer.load(BUILTIN_TOKENIZER)


def test_shipped_tokenizer_shape(tokenizer):
    assert tokenizer.vocab_size == 4096
    assert [tokenizer.special_ids[t] for t in SPECIAL_TOKENS] == list(range(4091, 4096))
    assert all(not tokenizer.is_special(i) for i in range(4091))


def test_trainer_merges_most_frequent_pair_first():
    ranks = train_bpe(["aaab aaab aaab xy"], 258)
    # ("a","a") is the most frequent pair; then ("aa","a") and ("a","b") tie at 3 and the smaller ids win
    assert [t for t, r in sorted(ranks.items(), key=lambda kv: kv[1])][256:] == [b"aa", b"ab"]


@pytest.mark.slow
def test_trainer_is_deterministic_and_trains_the_corpus_quickly():
    texts = [w.text for w in builtin_split().train]
    start = time.perf_counter()
    ranks = train_bpe(texts, 600)
    elapsed = time.perf_counter() - start
    assert ranks == train_bpe(texts, 600)
    assert len(ranks) == 600
    print(f"600 ranks on the whole corpus in {elapsed:.1f}s")


def test_no_learned_token_equals_a_special_token():
    # a text made almost only of special-token look-alikes
    ranks = train_bpe(["<|end|><|end|> <|user|>x<|endoftext|>"] * 50, 300)
    Tokenizer(ranks)  # would raise on a clash
    assert all(s.encode() not in ranks for s in SPECIAL_TOKENS)


def test_user_text_never_becomes_a_special_token(tokenizer):
    for special in SPECIAL_TOKENS:
        ids = tokenizer.encode(f"say {special} now")
        assert not any(tokenizer.is_special(i) for i in ids)
        assert tokenizer.decode(ids) == f"say {special} now"


def test_tiktoken_equals_reference_encoder_on_corpus_lines(tokenizer):
    lines = "".join(w.text for w in builtin_split().validation).splitlines()
    sample = random.Random(0).sample(lines, 2000)
    for line in sample:
        assert tokenizer.encode(line) == reference_encode(line, tokenizer.ranks), line


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=80))
def test_tiktoken_equals_reference_encoder_on_random_text(tokenizer, text):
    assert tokenizer.encode(text) == reference_encode(text, tokenizer.ranks)


EXOTIC = st.sampled_from(["😀", "👩‍👩‍👧", "漢字", "かな", "é", "e\u0301", "\u200d", "\x00", "\t", "\r\n", "ﷺ", "𝔘"])


@settings(max_examples=500, deadline=None)
@given(st.lists(st.one_of(st.text(max_size=10), EXOTIC), max_size=12).map("".join))
def test_round_trip_any_unicode(tokenizer, text):
    # lone surrogates cannot be UTF-8: they come back as U+FFFD, everything else exactly
    assert tokenizer.decode(tokenizer.encode(text)) == replace_lone_surrogates(text)


def test_lone_surrogate_rule(tokenizer):
    assert tokenizer.decode(tokenizer.encode("a\ud800b")) == "a\ufffdb"


def test_ranks_file_round_trip_and_damage(tmp_path, tokenizer):
    path = tmp_path / "t.tiktoken"
    tokenizer.save(path)
    assert load_ranks(path) == tokenizer.ranks
    path.write_text("not base64 at all\n")
    with pytest.raises(ValueError, match="line 1"):
        load_ranks(path)
    with pytest.raises(ValueError, match="missing"):
        load_ranks(tmp_path / "absent.tiktoken")


def test_word_counting_uses_gpt2_pre_tokenization():
    assert count_words(["Hello world's  end"]) == {b"Hello": 1, b" world": 1, b"'s": 1, b" ": 1, b" end": 1}
