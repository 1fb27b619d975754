"""A reasoning model's reply through the engine core: the thinking comes as pieces of kind
"thinking", the answer as "answer", the markers never shown (even where they are control tokens
that llama.cpp detokenizes as nothing), Finished counts the thinking's tokens, and the next
turn's prompt passes the earlier thinking exactly as the reference (transformers) renders it.

A random-weight model never writes `</think>` on its own, so the engine here is the engine core
over a scripted logits source: each step's logits put the next scripted id on top."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model.inference.backend import ANSWER, THINKING, Finished, TextPiece, collect_reply
from model.inference.engine_core import EngineCore
from model.inference.sampling import SamplingParams
from model.text.chat_format import Message
from model.text.chat_template import TemplateFormat
from tests.helpers.char_vocab import CharVocab

TEMPLATES = Path(__file__).parents[1] / "data" / "chat_templates"
QWEN3 = (TEMPLATES / "Qwen-Qwen3-0.6B.jinja").read_text()
QWEN35 = (TEMPLATES / "Qwen3.5-4B.jinja").read_text()
GPT_OSS = (TEMPLATES / "openai-gpt-oss-120b.jinja").read_text()
LLAMA32 = (TEMPLATES / "meta-llama-Llama-3.2-3B-Instruct.jinja").read_text()
TEXT_BASE = 1000  # text is one id a character: TEXT_BASE + its code point (ASCII here)
GREEDY = SamplingParams(temperature=0.0, max_tokens=200)


def llama_like_vocab(control: list[str], text_tokens: tuple[str, ...] = ()) -> CharVocab:
    """Control tokens as llama.cpp writes them in generated text: as nothing (the format's
    show_reasoning_markers brings the markers' text back); `text_tokens` are added tokens that are
    not control tokens (Qwen3's `<think>`), written as their text."""
    eos = next((t for t in ("<|endoftext|>", "<|return|>") if t in control), None)
    return CharVocab(control, text_base=TEXT_BASE, eos=eos, text_tokens=text_tokens)


QWEN_VOCAB = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]
HARMONY_VOCAB = ["<|endoftext|>", "<|start|>", "<|end|>", "<|message|>", "<|channel|>", "<|return|>", "<|call|>"]
HARMONY_VOCAB += ["<|constrain|>"]
LLAMA_VOCAB = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]


class ScriptedEngine(EngineCore):
    """The engine core whose logits put the script's next id on top, one step per evaluate()."""

    def __init__(self, prompt_format):
        super().__init__(prompt_format, 4096, "scripted")
        self.script: list[int] = []
        self.prompts: list[list[int]] = []

    def say(self, ids: list[int]) -> None:
        self.script = list(ids)

    def evaluate(self, start: int, ids: list[int]) -> np.ndarray:
        logits = np.zeros(TEXT_BASE + 128, dtype=np.float32)
        logits[self.script.pop(0) if self.script else 0] = 100.0
        return logits

    def _prefill(self, prompt):
        self.prompts.append(list(prompt))
        return super()._prefill(prompt)


def script(fmt: TemplateFormat, *parts: str) -> list[int]:
    """Ids for text where a part that is a control token is that token."""
    ids: list[int] = []
    for part in parts:
        ids += [fmt.vocab.control_tokens[part]] if part in fmt.vocab.control_tokens else fmt.vocab.encode(part)
    return ids


def qwen3(template: str = QWEN3) -> tuple[ScriptedEngine, TemplateFormat]:
    fmt = TemplateFormat(llama_like_vocab(QWEN_VOCAB, ("<think>", "</think>")), template)
    return ScriptedEngine(fmt), fmt


def kinds(events) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for event in events:
        if isinstance(event, TextPiece) and event.text:
            if out and out[-1][0] == event.kind:
                out[-1] = (event.kind, out[-1][1] + event.text)
            else:
                out.append((event.kind, event.text))
    return out


def test_a_qwen3_reply_streams_its_thinking_apart_from_its_answer():
    engine, fmt = qwen3()
    reply_ids = script(fmt, "<think>", "\nLet me see.\n", "</think>", "\n\nIt is 4.", "<|im_end|>")
    engine.say(reply_ids)
    events = list(engine.chat([Message("user", "2+2?")], GREEDY))
    assert kinds(events) == [(THINKING, "\nLet me see.\n"), (ANSWER, "It is 4.")]
    pieces = [e for e in events if isinstance(e, TextPiece)]
    assert sum((p.token_ids for p in pieces), []) == reply_ids[:-1]  # every id reported once, in order
    finished = events[-1]
    assert isinstance(finished, Finished) and finished.reason == "stop"
    assert finished.thinking_tokens == len(script(fmt, "<think>", "\nLet me see.\n", "</think>"))
    assert finished.completion_tokens == len(reply_ids) - 1  # the stop token is not counted, as before
    assert finished.thinking_s >= 0.0
    reply = collect_reply(iter(events))
    assert (reply.thinking, reply.text) == ("\nLet me see.\n", "It is 4.")


def test_a_reply_that_starts_inside_the_thinking_is_thinking_until_it_closes():
    """Qwen3.5's generation prompt opens the block itself: the reply starts inside it."""
    engine, fmt = qwen3(QWEN35)
    assert fmt.reasoning_format is not None and fmt.reasoning_format.starts_inside
    engine.say(script(fmt, "Hmm.", "</think>", "\n\nYes.", "<|im_end|>"))
    reply = collect_reply(engine.chat([Message("user", "Sure?")], GREEDY))
    assert (reply.thinking, reply.text) == ("Hmm.", "Yes.")
    assert reply.finished is not None and reply.finished.thinking_tokens == len(script(fmt, "Hmm.", "</think>"))


def test_thinking_switched_off_by_the_formats_own_variables_makes_the_whole_reply_the_answer():
    fmt = TemplateFormat(
        llama_like_vocab(QWEN_VOCAB, ("<think>", "</think>")), QWEN35, template_kwargs={"enable_thinking": False}
    )
    engine = ScriptedEngine(fmt)
    engine.say(script(fmt, "Yes.", "<|im_end|>"))
    reply = collect_reply(engine.chat([Message("user", "Sure?")], GREEDY))
    assert (reply.thinking, reply.text) == ("", "Yes.")
    assert reply.finished is not None and reply.finished.thinking_tokens == 0


def test_gpt_oss_channels_are_split_though_their_markers_are_control_tokens():
    fmt = TemplateFormat(llama_like_vocab(HARMONY_VOCAB), GPT_OSS, eog_ids={5, 6})
    engine = ScriptedEngine(fmt)
    assert fmt.show_reasoning_markers  # the engine turned it on: llama.cpp writes these as nothing
    reply_ids = script(
        fmt,
        "<|channel|>",
        "analysis",
        "<|message|>",
        "User asks. Answer.",
        "<|end|>",
        "<|start|>",
        "assistant",
        "<|channel|>",
        "final",
        "<|message|>",
        "Hello!",
        "<|return|>",
    )
    engine.say(reply_ids)
    reply = collect_reply(engine.chat([Message("user", "Hi")], GREEDY))
    assert (reply.thinking, reply.text) == ("User asks. Answer.", "Hello!")
    assert reply.token_ids == reply_ids[:-1]


def test_a_model_without_a_reasoning_format_is_all_answer_and_shows_no_control_tokens():
    fmt = TemplateFormat(llama_like_vocab(LLAMA_VOCAB), LLAMA32)
    engine = ScriptedEngine(fmt)
    assert fmt.reasoning_format is None and not fmt.show_reasoning_markers
    engine.say(script(fmt, "<think>x</think> ok", "<|eot_id|>"))
    reply = collect_reply(engine.chat([Message("user", "Hi")], GREEDY))
    assert (reply.thinking, reply.text) == ("", "<think>x</think> ok")


def test_an_answer_split_over_many_pieces_keeps_every_character():
    engine, fmt = qwen3()
    engine.say(script(fmt, "<th", "ink>", "a<", "/thi", "nk", ">", "\n", "b</th", "x", "<|im_end|>"))
    reply = collect_reply(engine.chat([Message("user", "?")], GREEDY))
    assert (reply.thinking, reply.text) == ("a", "b</thx")


def test_a_reply_cut_by_the_token_budget_inside_the_thinking_keeps_its_thinking():
    engine, fmt = qwen3()
    engine.say(script(fmt, "<think>", "abcdef"))
    reply = collect_reply(engine.chat([Message("user", "?")], SamplingParams(temperature=0.0, max_tokens=4)))
    assert reply.finished is not None and reply.finished.reason == "length"
    assert (reply.thinking, reply.text) == ("abc", "")
    assert reply.finished.thinking_tokens == 4


def test_complete_is_not_split():
    engine, fmt = qwen3()
    engine.say(script(fmt, "<think>", "a", "</think>", "b"))
    reply = collect_reply(engine.complete("x", SamplingParams(temperature=0.0, max_tokens=4)))
    assert (reply.thinking, reply.text) == ("", "<think>a</think>b")


@pytest.mark.parametrize("template", [QWEN3, QWEN35], ids=["Qwen3", "Qwen3.5"])
def test_the_next_turn_passes_the_earlier_thinking_as_the_reference_renders_it(template):
    reference = pytest.importorskip("transformers.utils.chat_template_utils")
    engine, fmt = qwen3(template)
    opened = fmt.reasoning_format is not None and fmt.reasoning_format.starts_inside
    engine.say(script(fmt, *([] if opened else ["<think>"]), "\nAdd them.\n", "</think>", "\n\nIt is 4.", "<|im_end|>"))
    first = [Message("user", "2+2?")]
    reply = collect_reply(engine.chat(first, GREEDY))
    assert (reply.thinking, reply.text) == ("\nAdd them.\n", "It is 4.")

    conversation = first + [Message("assistant", reply.text, reasoning=reply.thinking), Message("user", "Sure?")]
    engine.say(script(fmt, "Yes.", "<|im_end|>"))
    collect_reply(engine.chat(conversation, GREEDY))
    as_reference = [
        {"role": m.role, "content": m.content, **({"reasoning_content": m.reasoning} if m.reasoning else {})}
        for m in conversation
    ]
    rendered, _ = reference.render_jinja_template(
        conversations=[as_reference], chat_template=template, add_generation_prompt=True
    )
    assert "".join(fmt.vocab.token_text(i) for i in engine.prompts[-1]) == rendered[0]
    assert "Add them" not in rendered[0]  # Qwen3 drops an earlier turn's thinking


def test_the_thinking_switch_reaches_the_template_through_the_params():
    engine, fmt = qwen3(QWEN35)
    engine.say(script(fmt, "Yes.", "<|im_end|>"))
    reply = collect_reply(engine.chat([Message("user", "Sure?")], SamplingParams(temperature=0.0, thinking=False)))
    assert (reply.thinking, reply.text) == ("", "Yes.")  # off: the template closes an empty block itself
    assert fmt.prompt_text([Message("user", "Sure?")]).endswith("<think>\n\n</think>\n\n")
    assert fmt.template_kwargs == {"enable_thinking": False}

    engine.say(script(fmt, "Hm.", "</think>", "Yes.", "<|im_end|>"))
    reply = collect_reply(engine.chat([Message("user", "Sure?")], SamplingParams(temperature=0.0, thinking=None)))
    assert (reply.thinking, reply.text) == ("Hm.", "Yes.")  # the model's default: on
    assert fmt.template_kwargs == {}


def test_gpt_oss_maps_thinking_off_to_low_reasoning_effort_and_takes_raw_template_kwargs():
    fmt = TemplateFormat(llama_like_vocab(HARMONY_VOCAB), GPT_OSS, eog_ids={5, 6})
    engine = ScriptedEngine(fmt)
    engine.say(script(fmt, "<|channel|>", "final", "<|message|>", "Hi", "<|return|>"))
    collect_reply(engine.chat([Message("user", "Hi")], SamplingParams(temperature=0.0, thinking=False)))
    assert "Reasoning: low" in fmt.prompt_text([Message("user", "Hi")])
    engine.say(script(fmt, "<|channel|>", "final", "<|message|>", "Hi", "<|return|>"))
    params = SamplingParams(temperature=0.0, thinking=False, template_kwargs={"reasoning_effort": "high"})
    collect_reply(engine.chat([Message("user", "Hi")], params))
    assert "Reasoning: high" in fmt.prompt_text([Message("user", "Hi")])  # an explicit variable wins


@pytest.mark.parametrize(
    "values",
    [dict(thinking="yes"), dict(template_kwargs={"a": {"b": 1}}), dict(template_kwargs={1: True})],
    ids=["thinking", "nested", "key"],
)
def test_bad_template_variables_are_refused_before_any_generation(values):
    from model.inference.sampling import SamplingError

    with pytest.raises(SamplingError):
        SamplingParams(**values).validate()


def test_the_context_counts_the_thinking_the_template_keeps():
    """What the context bar shows is fit()'s size: the last reply's thinking, which Qwen3 keeps in
    the prompt, counts; an earlier turn's, which it drops, does not."""
    engine, fmt = qwen3()
    answer_only = [Message("user", "2+2?"), Message("assistant", "4.")]
    with_thinking = [Message("user", "2+2?"), Message("assistant", "4.", reasoning="Add them up.")]
    assert engine.fit(with_thinking, 16).size > engine.fit(answer_only, 16).size
    later = [Message("user", "ok")]
    assert engine.fit(with_thinking + later, 16).size == engine.fit(answer_only + later, 16).size
