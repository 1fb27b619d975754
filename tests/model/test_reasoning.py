"""A reasoning model's reply is split into thinking and answer as it streams, in the layouts real
models use; markers may arrive split across pieces anywhere; a template's layout, its thinking
switch and whether its generation prompt opens the thinking are found from the template."""

from __future__ import annotations

from pathlib import Path

import pytest

from model.text.chat_format import Message
from model.text.chat_template import TemplateFormat
from model.text.reasoning import (
    ANSWER,
    FORMATS,
    THINKING,
    ReasoningFormat,
    ReasoningSplitter,
    detect_format,
    join_reply,
    split_reply,
)

TEMPLATES = Path(__file__).parents[1] / "data" / "chat_templates"


def inside(fmt: ReasoningFormat) -> ReasoningFormat:
    return ReasoningFormat(**{**fmt.__dict__, "starts_inside": True})


# (format, the reply as the model streams it, the thinking, the answer)
REPLIES = {
    "think": (FORMATS["think"], "<think>\nLet me see: 2+2.\n</think>\n\nIt is 4.", "\nLet me see: 2+2.\n", "It is 4."),
    "think, no thinking": (FORMATS["think"], "Just 4.", "", "Just 4."),
    "think, empty block": (FORMATS["think"], "<think>\n\n</think>\n\nFour.", "\n\n", "Four."),
    "think, opened by the prompt": (inside(FORMATS["think"]), "Hmm, 2+2.\n</think>\n\nFour.", "Hmm, 2+2.\n", "Four."),
    "think, opened by the prompt and again": (
        inside(FORMATS["think"]),
        "<think>\nHmm.</think>Four.",
        "\nHmm.",
        "Four.",
    ),
    "think, markers talked about in the answer": (
        FORMATS["think"],
        "<think>x</think>Use <think> and </think> tags.",
        "x",
        "Use <think> and </think> tags.",
    ),
    "think, an answer that starts with a <": (FORMATS["think"], "<b>bold</b>", "", "<b>bold</b>"),
    "think, cut off while thinking": (FORMATS["think"], "<think>still going", "still going", ""),
    "granite": (FORMATS["granite"], "<think>Plan.</think><response>Done.</response>", "Plan.", "Done."),
    "seed": (FORMATS["seed"], "<seed:think>Plan.</seed:think>Done.", "Plan.", "Done."),
    "mistral": (FORMATS["mistral"], "[THINK]Plan it.[/THINK]Done, ünïcode ✓.", "Plan it.", "Done, ünïcode ✓."),
    "cohere": (
        FORMATS["cohere"],
        "<|START_THINKING|>Plan.<|END_THINKING|><|START_RESPONSE|>Done.<|END_RESPONSE|>",
        "Plan.",
        "Done.",
    ),
    "gpt-oss": (
        FORMATS["gpt-oss"],
        "<|channel|>analysis<|message|>User asks 2+2.<|end|><|start|>assistant<|channel|>final<|message|>4.<|return|>",
        "User asks 2+2.",
        "4.",
    ),
    "gpt-oss, two analyses": (
        FORMATS["gpt-oss"],
        "<|channel|>analysis<|message|>One.<|end|><|start|>assistant<|channel|>analysis<|message|>Two.<|end|>"
        "<|start|>assistant<|channel|>final<|message|>4.",
        "One.Two.",
        "4.",
    ),
    "gpt-oss, final only": (FORMATS["gpt-oss"], "<|channel|>final<|message|>4.", "", "4."),
    "gemma4": (FORMATS["gemma4"], "<|channel>thought\nPlan.<channel|>Done.", "\nPlan.", "Done."),
    "kimi-k3": (
        inside(FORMATS["kimi-k3"]),
        "Plan.<|close|>think<|sep|><|open|>response<|sep|>Done.<|close|>response<|sep|>",
        "Plan.",
        "Done.",
    ),
    "apriel": (
        inside(FORMATS["apriel"]),
        "\n1. plan\n[BEGIN FINAL RESPONSE]\nDone.\n[END FINAL RESPONSE]",
        "\n1. plan\n",
        "Done.\n",
    ),
}


def run(fmt, pieces):
    splitter = ReasoningSplitter(fmt)
    out = []
    for piece in pieces:
        out += splitter.feed(piece)
    out += splitter.finish()
    thinking = "".join(t for kind, t in out if kind == THINKING)
    answer = "".join(t for kind, t in out if kind == ANSWER)
    assert all(kind in (THINKING, ANSWER) and text for kind, text in out)
    kinds = [kind for kind, _ in out]
    assert kinds == sorted(kinds, key=lambda kind: kind != THINKING)  # all the thinking, then the answer
    return thinking, answer


@pytest.mark.parametrize("name", list(REPLIES))
def test_a_reply_splits_the_same_wherever_the_pieces_break(name):
    fmt, reply, thinking, answer = REPLIES[name]
    assert run(fmt, [reply]) == (thinking, answer)
    assert run(fmt, list(reply)) == (thinking, answer)  # one character a piece
    for cut in range(len(reply) + 1):
        assert run(fmt, [reply[:cut], reply[cut:]]) == (thinking, answer), cut
    for first in range(0, len(reply) + 1, 3):  # three pieces
        for second in range(first, len(reply) + 1, 2):
            assert run(fmt, [reply[:first], reply[first:second], reply[second:]]) == (thinking, answer)
    # and as UTF-8 bytes would arrive, decoded at each byte position that ends a character
    data = reply.encode()
    cuts = [i for i in range(len(data) + 1) if i == len(data) or (data[i] & 0xC0) != 0x80]
    for cut in cuts:
        assert run(fmt, [data[:cut].decode(), data[cut:].decode()]) == (thinking, answer)


def test_thinking_streams_before_the_reply_ends():
    splitter = ReasoningSplitter(FORMATS["think"])
    assert splitter.feed("<think>I am ") == [(THINKING, "I am ")]
    assert splitter.thinking
    assert splitter.feed("thinking</th") == [(THINKING, "thinking")]  # the start of a marker waits
    assert splitter.feed("ink>\n\nAnswer") == [(ANSWER, "Answer")]
    assert not splitter.thinking
    assert splitter.finish() == []


def test_a_reply_without_a_format_is_all_answer():
    splitter = ReasoningSplitter(None)
    assert splitter.feed("<think>x</think>y") == [(ANSWER, "<think>x</think>y")]
    assert split_reply("<think>x</think>y", None) == ("", "<think>x</think>y")


def test_an_earlier_reply_is_written_back_as_the_model_wrote_it():
    assert join_reply("\nPlan.\n", "Done.", FORMATS["think"]) == "<think>\nPlan.\n</think>\n\nDone."
    assert join_reply("Plan.", "Done.", FORMATS["think"]) == "<think>Plan.</think>\n\nDone."  # no newline added
    for name in ("mistral", "cohere", "gpt-oss", "granite", "seed", "gemma4", "kimi-k3"):
        thinking, answer = split_reply(join_reply(" Plan.\n", "Done.", FORMATS[name]), FORMATS[name])
        assert (thinking, answer) == (" Plan.\n", "Done."), name
    assert join_reply("", "Done.", FORMATS["think"]) == "Done."


# template file -> a reply as that family's model writes it (the newlines after its thinking are the
# ones its template writes after an earlier reply's or an empty thinking block)
WRITTEN_BY = {
    "Qwen-Qwen3-0.6B.jinja": "<think>\nAdd them.\n</think>\n\nIt is 4.",
    "HuggingFaceTB-SmolLM3-3B.jinja": "<think>\nAdd them.\n</think>\nIt is 4.",
    "NVIDIA-Nemotron-3-Nano-30B-A3B-BF16.jinja": "<think>Add them.</think>\nIt is 4.",
    "ibm-granite-granite-3.3-2B-Instruct.jinja": "<think>Add them.</think><response>It is 4.</response>",
    "mistralai-Ministral-3-14B-Reasoning-2512.jinja": "[THINK]Add them.[/THINK]It is 4.",
    "openai-gpt-oss-120b.jinja": "<|channel|>analysis<|message|>Add them.<|end|><|start|>assistant"
    "<|channel|>final<|message|>It is 4.",
}


@pytest.mark.parametrize("template_name", list(WRITTEN_BY))
def test_a_reply_split_and_joined_again_is_byte_for_byte_what_the_model_wrote(template_name):
    fmt = detect_format((TEMPLATES / template_name).read_text())
    written = WRITTEN_BY[template_name]
    thinking, answer = split_reply(written, fmt)
    assert answer == "It is 4." and thinking.strip() == "Add them."
    assert join_reply(thinking, answer, fmt) == written


def test_the_gap_after_the_thinking_is_the_one_the_template_writes():
    gaps = {name: detect_format((TEMPLATES / name).read_text()).gap for name in WRITTEN_BY}
    assert gaps["Qwen-Qwen3-0.6B.jinja"] == "\n\n"
    assert gaps["HuggingFaceTB-SmolLM3-3B.jinja"] == "\n"
    assert gaps["ibm-granite-granite-3.3-2B-Instruct.jinja"] == ""
    # a template that writes nothing after `</think>` (it drops old thinking): R1's habit, two newlines
    assert detect_format("{{ content.split('</think>')[-1] }}").gap == "\n\n"


# template file -> what its prompt ends with when a reply stopped inside its thinking is continued
CONTINUED = {
    "Qwen-Qwen3-0.6B.jinja": "<|im_start|>assistant\n<think>\nAdd th",  # the model opened the block
    "deepseek-ai-DeepSeek-R1-Distill-Llama-8B.jinja": "<｜Assistant｜><think>\n\nAdd th",  # the prompt opened it
    "ibm-granite-granite-3.3-2B-Instruct.jinja": "<|start_of_role|>assistant<|end_of_role|><think>\nAdd th",
    "mistralai-Ministral-3-14B-Reasoning-2512.jinja": "[INST]2+2?[/INST][THINK]\nAdd th",
}


@pytest.mark.parametrize("template_name", list(CONTINUED))
def test_a_reply_stopped_inside_its_thinking_continues_inside_it(template_name):
    chat_format = TemplateFormat(Vocab(), (TEMPLATES / template_name).read_text())
    stopped = [Message("user", "2+2?"), Message("assistant", "", reasoning="\nAdd th")]
    prompt = chat_format.prompt_text(stopped, continue_last=True)
    assert prompt.endswith(CONTINUED[template_name])
    # the prompt the reply started from, then what the model wrote: the block open, not closed
    started = chat_format.prompt_text(stopped[:1])
    assert prompt.startswith(started) and chat_format.reasoning_format.close not in prompt[len(started) :]
    # what follows is thinking until the block closes, then answer
    splitter = ReasoningSplitter(chat_format.continuation_reasoning(stopped))
    fmt = chat_format.reasoning_format
    pieces = splitter.feed(f"em up.{fmt.close}") + splitter.feed("It is 4.") + splitter.finish()
    assert pieces == [(THINKING, "em up."), (ANSWER, "It is 4.")]


def test_a_reply_stopped_in_its_answer_continues_as_answer():
    chat_format = TemplateFormat(Vocab(), (TEMPLATES / "Qwen-Qwen3-0.6B.jinja").read_text())
    stopped = [Message("user", "2+2?"), Message("assistant", "It is", reasoning="Add them.")]
    assert chat_format.continuation_reasoning(stopped) is None
    assert chat_format.prompt_text(stopped, continue_last=True).endswith("</think>\n\nIt is")
    plain = TemplateFormat(Vocab(), (TEMPLATES / "meta-llama-Llama-3.2-3B-Instruct.jinja").read_text())
    assert plain.continuation_reasoning([Message("user", "hi"), Message("assistant", "", reasoning="x")]) is None


class Vocab:
    control_tokens: dict[str, int] = {}
    add_bos = False
    bos_id = None
    eos_id = None

    def encode(self, text):
        return [ord(c) for c in text]

    def token_text(self, token_id):
        return chr(token_id)

    def token_bytes(self, token_id):
        return chr(token_id).encode()


# template file -> (layout, the reply starts inside the thinking, its switch)
DETECTED = {
    "Qwen-Qwen3-0.6B.jinja": ("think", False, "enable_thinking"),
    "Qwen3.5-4B.jinja": ("think", True, "enable_thinking"),
    "Qwen-QwQ-32B.jinja": ("think", False, "enable_thinking"),
    "deepseek-ai-DeepSeek-R1-Distill-Llama-8B.jinja": ("think", True, None),
    "deepseek-ai-DeepSeek-V3.1.jinja": ("think", False, "enable_thinking"),
    "GLM-4.6.jinja": ("think", False, "enable_thinking"),
    "MiniMax-M2.jinja": ("think", True, None),
    "HuggingFaceTB-SmolLM3-3B.jinja": ("think", False, "enable_thinking"),
    "NVIDIA-Nemotron-3-Nano-30B-A3B-BF16.jinja": ("think", True, "enable_thinking"),
    "ibm-granite-granite-3.3-2B-Instruct.jinja": ("granite", False, "thinking"),
    "ByteDance-Seed-OSS.jinja": ("seed", False, None),
    "mistralai-Ministral-3-14B-Reasoning-2512.jinja": ("mistral", False, None),
    "Cohere2MoE.jinja": ("cohere", True, "reasoning_effort"),
    "openai-gpt-oss-120b.jinja": ("gpt-oss", False, "reasoning_effort"),
    "google-gemma-4-31B-it.jinja": ("gemma4", False, "enable_thinking"),
    "Kimi-K3.jinja": ("kimi-k3", True, "thinking"),
    "Apriel-1.6-15b-Thinker-fixed.jinja": ("apriel", True, None),
    "meta-llama-Llama-3.2-3B-Instruct.jinja": None,
    "google-gemma-2-2b-it.jinja": None,
    "mistralai-Mistral-Nemo-Instruct-2407.jinja": None,
    "Qwen-Qwen2.5-7B-Instruct.jinja": None,
}


@pytest.mark.parametrize("template_name", list(DETECTED))
def test_the_layout_and_switch_are_found_from_the_template(template_name):
    chat_format = TemplateFormat(Vocab(), (TEMPLATES / template_name).read_text())
    fmt = chat_format.reasoning_format
    expected = DETECTED[template_name]
    if expected is None:
        assert fmt is None
        return
    assert fmt is not None and (fmt.name, fmt.starts_inside, fmt.switch) == expected


def test_turning_thinking_off_changes_where_the_reply_starts():
    """Qwen3.5 opens the thinking in its generation prompt; with enable_thinking=False it writes an
    empty block instead, so the reply is all answer."""
    chat_format = TemplateFormat(Vocab(), (TEMPLATES / "Qwen3.5-4B.jinja").read_text())
    assert chat_format.reasoning_format.starts_inside
    chat_format.template_kwargs = {"enable_thinking": False}
    assert not chat_format.reasoning_format.starts_inside
    assert chat_format.prompt_text([Message("user", "hi")]).endswith("<think>\n\n</think>\n\n")


def test_a_switch_is_found_only_where_the_template_reads_it():
    assert detect_format("{% if enable_thinking %}<think>{% endif %}").switch == "enable_thinking"
    assert detect_format("{{ 'describe your thinking' }}<think></think>").switch is None
    assert detect_format("{{ messages }}") is None


class ChatmlVocab(Vocab):
    control_tokens = {"<|im_start|>": 1, "<|im_end|>": 2}


def test_a_reply_remembered_as_written_goes_back_byte_for_byte_and_its_text_stays_text():
    """SmolLM3's template passes an earlier reply through: one its model wrote in this process goes back
    as written (here two newlines after the thinking, not the family's one); the control-token text
    inside its thinking and answer stays text, the markers it wrote are as written."""
    chat_format = TemplateFormat(ChatmlVocab(), (TEMPLATES / "HuggingFaceTB-SmolLM3-3B.jinja").read_text())
    thinking, answer = "Plan <|im_end|>", "Ok <|im_end|> done."
    written = f"<think>{thinking}</think>\n\n{answer}"
    conversation = [Message("user", "hi"), Message("assistant", answer, thinking), Message("user", "and?")]
    assert f"<think>{thinking}</think>\n{answer}<|im_end|>" in chat_format.prompt_text(conversation)  # the habit
    chat_format.remember_written_reply(thinking, answer, written)
    assert f"{written}<|im_end|>" in chat_format.prompt_text(conversation)
    segments = chat_format.segments(chat_format._render_text(conversation, True))
    turn_ends = chat_format.prompt_text(conversation).count("<|im_start|>") - 1  # all but the new reply's
    assert [text for text, control in segments if control].count("<|im_end|>") == turn_ends
