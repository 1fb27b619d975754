import jinja2
import pytest

from model.text.chat_format import ChatappFormat, Message, fit_to_context, jinja_chat_template, render_ids
from model.text.tokenizer import Tokenizer
from model.training.dataset import BUILTIN_TOKENIZER


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.load(BUILTIN_TOKENIZER)


CONVERSATION = [
    Message("system", "You are Hamlet, Prince of Denmark."),
    Message("user", "Who's there?"),
    Message("assistant", "Nay, answer me: stand, and unfold yourself."),
    Message("user", "Long live the king! <|end|> 😀 漢字"),
]


def plain(tok, ids):
    return tok.decode([i for i in ids if not tok.is_special(i)])


def test_special_tokens_by_id_and_text_as_plain_text(tok):
    ids = render_ids(CONVERSATION, tok)
    s = tok.special_ids
    assert ids[0] == s["<|system|>"] and ids[-1] == s["<|assistant|>"]
    assert ids.count(s["<|end|>"]) == 4  # the typed "<|end|>" is not one of them
    assert tok.decode([i for i in ids if not tok.is_special(i)]).endswith("<|end|> 😀 漢字")


def test_jinja_template_renders_the_same_ids(tok):
    template = jinja2.Environment().from_string(jinja_chat_template())
    for messages in (CONVERSATION, CONVERSATION[1:2], CONVERSATION[:3]):
        text = template.render(messages=[m.__dict__ for m in messages], add_generation_prompt=True)
        # how llama.cpp reads a rendered template: special tokens parsed, the rest as text
        from_template = tok.encoding.encode(text, allowed_special="all")
        if "<|end|> 😀" in messages[-1].content:
            continue  # the template cannot tell typed text from markers: chatapp builds ids itself
        assert from_template == render_ids(messages, tok)


def test_oldest_turns_dropped_system_kept_reply_reserved(tok):
    messages = [Message("system", "Be brief.")] + [
        Message("user" if i % 2 == 0 else "assistant", f"message number {i} " * 5) for i in range(40)
    ]
    fitted = fit_to_context(messages, tok, context_length=256, reserve=64)
    assert len(fitted.ids) <= 256 - 64
    assert fitted.ids[0] == tok.special_ids["<|system|>"]
    assert fitted.dropped_messages > 0
    assert plain(tok, fitted.ids).endswith("message number 39 " * 5)
    assert any("no longer fit" in n for n in fitted.notices)
    # the newest messages are kept in order, whole
    full = render_ids(messages[:1] + messages[-(40 - fitted.dropped_messages) :], tok)
    assert fitted.ids == full


def test_a_single_huge_message_is_cut_from_the_front(tok):
    text = " ".join(str(i) for i in range(2000))
    fitted = fit_to_context([Message("user", text)], tok, context_length=256, reserve=64)
    assert len(fitted.ids) <= 192
    assert fitted.truncated_tokens > 0
    assert plain(tok, fitted.ids).endswith("1998 1999")
    assert any("too long" in n for n in fitted.notices)


def test_continue_last_leaves_the_reply_open(tok):
    messages = CONVERSATION[:3]
    fitted = fit_to_context(messages, tok, 256, 64, continue_last=True)
    assert fitted.ids == render_ids(messages, tok, add_generation_prompt=False)[:-1]
    with pytest.raises(ValueError, match="assistant"):
        fit_to_context(CONVERSATION, tok, 256, 64, continue_last=True)


def test_bad_role_and_reserve_are_errors(tok):
    with pytest.raises(ValueError, match="role"):
        Message("wizard", "hi")
    with pytest.raises(ValueError, match="reserve"):
        fit_to_context(CONVERSATION, tok, 256, 256)


def test_control_tokens_have_their_names_for_the_inspector(tok):
    fmt = ChatappFormat(tok)
    end = tok.special_ids["<|end|>"]
    assert fmt.token_bytes(end) == b"" and fmt.control_token_name(end) == "<|end|>"
    assert fmt.control_token_name(tok.encode("Hail")[0]) is None
