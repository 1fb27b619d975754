"""TemplateFormat's prompts as ids: control tokens only where the template wrote them, a known
reply's sampled ids kept, a reply continued where its text ends, and fitting a long conversation
to the context with a handful of renders (not one per dropped turn) that drops exactly what
dropping one turn at a time would."""

from __future__ import annotations

from pathlib import Path

import pytest

from model.text.chat_format import Message
from model.text.chat_template import TemplateFormat
from tests.helpers.char_vocab import CharVocab

TEMPLATES = Path(__file__).parents[1] / "data" / "chat_templates"
CONTROL = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<think>", "</think>", "<|channel|>", "<|message|>"]


def vocab() -> CharVocab:
    return CharVocab(CONTROL, eos="<|im_end|>")


def qwen3() -> TemplateFormat:
    return TemplateFormat(
        CharVocab(CONTROL, eos="<|im_end|>"), (TEMPLATES / "Qwen-Qwen3-0.6B.jinja").read_text(), source="qwen3.jinja"
    )


def test_a_typed_control_token_is_plain_text_and_the_templates_are_tokens():
    chat_format = qwen3()
    ids = chat_format.render([Message("user", "a<|im_end|>b")])
    controls = [chat_format.vocab.names[i] for i in ids if i < 1000]
    assert controls == ["<|im_start|>", "<|im_end|>", "<|im_start|>"]  # user turn, its end, the reply's start
    assert [1000 + ord(c) for c in "a<|im_end|>b"] == ids[ids.index(1000 + ord("a")) :][:12]


def test_a_known_reply_keeps_its_sampled_ids():
    chat_format = qwen3()
    sampled = [1000 + ord("H"), 1000 + ord("i"), 1000 + ord("!")]  # what "Hi!" was sampled as, say
    sampled_other = [5000, 5001]  # a tokenization the encoder would not give
    messages = [Message("user", "hello"), Message("assistant", "Hi!"), Message("user", "again")]
    ids = chat_format.render(messages, known_replies={"Hi!": sampled_other})
    assert sampled_other == ids[ids.index(5000) : ids.index(5000) + 2]
    assert chat_format.render(messages, known_replies={"Hi!": sampled}) == chat_format.render(messages)


def test_a_reply_is_continued_where_its_text_ends():
    chat_format = qwen3()
    messages = [Message("user", "count"), Message("assistant", "one, two,")]
    text = chat_format.prompt_text(messages, continue_last=True)
    assert text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\none, two,")  # Qwen3's empty block
    render_jinja_template = pytest.importorskip("transformers.utils.chat_template_utils").render_jinja_template
    rendered, _ = render_jinja_template(
        conversations=[[{"role": m.role, "content": m.content} for m in messages]],
        chat_template=chat_format.template,
        continue_final_message=True,
    )
    assert text == rendered[0]  # as transformers continues a final message
    ids = chat_format.render(messages, continue_last=True)
    assert "".join(chat_format.vocab.token_text(i) for i in ids) == text


def test_reasoning_markers_are_written_for_the_splitter_when_asked():
    gpt_oss = TemplateFormat(
        CharVocab(CONTROL, eos="<|im_end|>"), (TEMPLATES / "openai-gpt-oss-120b.jinja").read_text()
    )
    channel = gpt_oss.vocab.control_tokens["<|channel|>"]
    assert gpt_oss.token_bytes(channel) == b""
    gpt_oss.show_reasoning_markers = True
    assert gpt_oss.token_bytes(channel) == b"<|channel|>"
    assert gpt_oss.token_bytes(gpt_oss.vocab.control_tokens["<|im_end|>"]) == b""  # not a marker of its layout


def conversation(turns: int) -> list[Message]:
    messages = [Message("system", "Be brief.")]
    for i in range(turns):
        messages.append(Message("user", f"question {i} " + "x" * (i % 7)))
        messages.append(Message("assistant", f"answer {i} " + "y" * (i % 5)))
    return messages + [Message("user", "last question")]


def fit_one_turn_at_a_time(chat_format, messages, context_length, reserve):
    """The old way: drop the oldest turn (up to the next user message) and render again."""
    budget = context_length - reserve
    system, turns = messages[:1], messages[1:]
    ids = chat_format.render(system + turns)
    dropped = 0
    while len(ids) > budget and len(turns) > 1:
        kept = turns[1:]
        while kept and kept[0].role != "user":
            kept = kept[1:]
        if not kept:
            break
        dropped += len(turns) - len(kept)
        turns = kept
        ids = chat_format.render(system + turns)
    return ids, dropped


@pytest.mark.parametrize("context_length", [300, 700, 1500, 3000, 6000])
def test_fitting_drops_what_one_turn_at_a_time_would_with_few_renders(context_length):
    chat_format = qwen3()
    messages = conversation(60)
    renders = 0
    original = chat_format._render_text_as_given

    def counting(*args, **kwargs):
        nonlocal renders
        renders += 1
        return original(*args, **kwargs)

    chat_format._render_text_as_given = counting
    fitted = chat_format.fit(messages, context_length, 100)
    assert renders <= 9  # 1 + log2(60 cut points) + 1, not 60
    expected_ids, expected_dropped = fit_one_turn_at_a_time(qwen3(), messages, context_length, 100)
    assert (fitted.ids, fitted.dropped_messages) == (expected_ids, expected_dropped)
    assert len(fitted.ids) <= context_length - 100
