from hypothesis import given, settings
from hypothesis import strategies as st

from model.inference.reply_stream import StopMatcher, Utf8Stream
from model.text.tokenizer import Tokenizer
from model.training.dataset import BUILTIN_TOKENIZER

TOKENIZER = Tokenizer.load(BUILTIN_TOKENIZER)
PIECES = st.sampled_from(["😀", "👩‍👩‍👧", "漢字", "かな", "é", "e\u0301", "🇬🇧", "Ω", " ", "a", "\n", "thou"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(PIECES, st.text(max_size=5)), max_size=20).map("".join))
def test_streamed_pieces_are_whole_characters_and_add_up(text):
    text = text.encode("utf-8", "replace").decode("utf-8")  # no lone surrogates
    stream = Utf8Stream()
    pieces = [stream.push(TOKENIZER.token_bytes(i)) for i in TOKENIZER.encode(text)] + [stream.flush()]
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces) or "\ufffd" in text


def test_a_split_emoji_waits_for_its_last_byte():
    stream = Utf8Stream()
    data = "😀".encode()
    assert stream.push(data[:2]) == ""
    assert stream.push(data[2:]) == "😀"


def test_stop_matcher_holds_back_a_possible_stop():
    matcher = StopMatcher(["END"])
    assert matcher.push("hello E") == "hello "
    assert matcher.push("N") == ""
    assert matcher.push("Dtrailing") == ""
    assert matcher.stopped


def test_stop_matcher_releases_false_alarms():
    matcher = StopMatcher(["END"])
    assert matcher.push("E") == ""
    assert matcher.push("x") == "Ex"
    assert not matcher.stopped
    assert matcher.push("EN") == ""
    assert matcher.flush() == "EN"
