"""More real families through the llama.cpp engine: DeepSeek-R1-Distill-Qwen, SmolLM3, Granite 3.3,
Llama 3.2, Gemma 3 and Ministral 3 Reasoning (tests/helpers/foreign_gguf.py: their real templates and token
layouts, random weights). Random weights never write an end of thinking, so the logits are scripted
(the ids a real model would sample); the vocabulary, the detokenizing, the stop tokens and the next
turn's prompt are llama.cpp's and the real templates'. For each: the reasoning layout is detected
where the template has one, a reply is split and stops on the template's end token, and the next
turn's prompt ids detokenize to exactly what transformers renders."""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest

from model.inference.backend import collect_reply
from model.inference.sampling import SamplingParams
from model.text.chat_format import Message
from model.text.reasoning import thinking_kwargs
from tests.helpers.foreign_gguf import FAMILIES, REAL_TEMPLATES, write_foreign_gguf
from tests.helpers.scripted_llama import ids_of, scripted_engine

pytest.importorskip("llama_cpp")


@dataclass(frozen=True)
class Case:
    reasoning: str | None  # the layout detect_format should find (model.text.reasoning), None: none
    thinking: bool | None  # the chat's thinking setting for the reply
    reply: tuple[str, ...]  # what the model writes: control tokens by name, text, then the end token
    thought: str
    answer: str
    earlier: str = "written"  # the earlier reply for transformers: "written" (all the model wrote) or "fields"
    kept: str = ""  # the part of what the model wrote that the template passes into the next prompt unchanged


CASES = {
    # thinking on: the generation prompt opens `<think>\n`, the reply starts inside it
    "deepseek-r1-qwen": Case(
        "think",
        True,
        ("Add them.\n", "</think>", "\n\nIt is 4.", "<｜end▁of▁sentence｜>"),
        "Add them.\n",
        "It is 4.",
        kept="\n\nIt is 4.",  # the template drops the thinking (`content.split('</think>')[-1]`)
    ),
    # SmolLM3 writes one newline after its thinking, Granite none before <response>: each is kept
    "smollm3": Case(
        "think",
        None,
        ("<think>", "\nAdd them.\n", "</think>", "\nIt is 4.", "<|im_end|>"),
        "\nAdd them.\n",
        "It is 4.",
        kept="<think>\nAdd them.\n</think>\nIt is 4.",
    ),
    "granite": Case(
        "granite",
        True,
        ("<think>Add them.</think>", "<response>It is 4.</response>", "<|end_of_text|>"),
        "Add them.",
        "It is 4.",
        kept="<think>Add them.</think><response>It is 4.</response>",
    ),
    "llama3.2": Case(None, None, ("It is 4.", "<|eot_id|>"), "", "It is 4.", kept="It is 4."),
    "gemma3": Case(None, None, ("It is 4.", "<end_of_turn>"), "", "It is 4.", kept="It is 4."),
    # the template reads `thinking` (of a content block): the reply goes as fields, and a string
    # content's thinking is not written back
    "mistral": Case(
        "mistral", None, ("[THINK]", "Add them.", "[/THINK]", "It is 4.", "</s>"), "Add them.", "It is 4.", "fields"
    ),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def engine(request, tmp_path_factory):
    family = request.param
    path = write_foreign_gguf(  # the toy vocabulary spells the long system prompts (Granite, Mistral) out
        tmp_path_factory.mktemp("families") / f"{family}.gguf", family, context_length=4096
    )
    engine = scripted_engine(path)
    yield family, engine
    engine.close()


def params(case: Case) -> SamplingParams:
    return SamplingParams(temperature=0.0, max_tokens=100, thinking=case.thinking)


def test_the_family_carries_its_real_template():
    for family in CASES:
        template = FAMILIES[family].chat_template
        assert template is not None and any(
            template == path.read_text(encoding="utf-8") for path in REAL_TEMPLATES.glob("*.jinja")
        ), family
    gemma = REAL_TEMPLATES / "google-gemma-2-2b-it.jinja"
    assert FAMILIES["gemma"].chat_template == gemma.read_text(encoding="utf-8").rstrip("\n")


def test_the_reasoning_layout_is_detected(engine):
    family, llama = engine
    fmt = llama.prompt_format.reasoning_format
    assert (fmt.name if fmt else None) == CASES[family].reasoning


def test_a_reply_is_split_and_stops_on_the_templates_end_token(engine):
    family, llama = engine
    case = CASES[family]
    end = FAMILIES[family].end_of_turn_id
    assert end in llama.prompt_format.stop_ids
    reply_ids = ids_of(llama, *case.reply)
    assert reply_ids[-1] == end
    llama.script[:] = reply_ids + ids_of(llama, "never reached")
    reply = collect_reply(llama.chat([Message("user", "2+2?")], params(case)))
    assert (reply.thinking, reply.text) == (case.thought, case.answer)
    assert reply.finished is not None and reply.finished.reason == "stop"
    assert reply.token_ids == reply_ids[:-1]
    assert (reply.finished.thinking_tokens > 0) == bool(case.thought)


def next_turn(family: str, llama, case: Case, reply: tuple[str, ...]) -> tuple[str, str, str]:
    """The model writes `reply`; then the next turn's prompt, as chatapp's engine renders it and as
    transformers does, and the text the model wrote."""
    reference = pytest.importorskip("transformers.utils.chat_template_utils")
    reply_ids = ids_of(llama, *reply)
    llama.script[:] = list(reply_ids)
    answered = collect_reply(llama.chat([Message("user", "2+2?")], params(case)))
    conversation = [
        Message("user", "2+2?"),
        Message("assistant", answered.text, reasoning=answered.thinking),
        Message("user", "Sure?"),
    ]
    prompt = llama.fit(conversation, 16).ids
    # The earlier reply as transformers gets it: the answer with its thinking as fields (as HF passes
    # them) for a template that reads them, else the whole text the model wrote (a template splits the
    # thinking off itself).
    template = llama.prompt_format.template
    written = llama.llm.detokenize(reply_ids[:-1], special=True).decode()
    if family == "deepseek-r1-qwen":
        written = "<think>\n" + written  # the generation prompt opened the block
    if "reasoning_content" in template or case.earlier == "fields":
        fields = {"reasoning_content": answered.thinking, "thinking": answered.thinking}
        earlier = {"role": "assistant", "content": answered.text, **fields}
    else:
        earlier = {"role": "assistant", "content": written}
    as_reference = [{"role": "user", "content": "2+2?"}, earlier, {"role": "user", "content": "Sure?"}]
    spec = FAMILIES[family]
    kwargs = thinking_kwargs(llama.prompt_format.reasoning_format, case.thinking)
    rendered, _ = reference.render_jinja_template(
        conversations=[as_reference],
        chat_template=template,
        add_generation_prompt=True,
        bos_token=spec.bos,
        eos_token=spec.eos,
        **kwargs,
    )
    return llama.llm.detokenize(prompt, special=True).decode(), rendered[0], written


def test_the_next_turn_is_rendered_as_transformers_renders_it(engine):
    family, llama = engine
    case = CASES[family]
    prompt_text, rendered, written = next_turn(family, llama, case, case.reply)
    assert prompt_text == rendered
    if case.kept:  # where the template passes the reply through, the prompt holds what the model wrote
        assert case.kept in written and f"{case.kept}{FAMILIES[family].end_of_turn}" in prompt_text


# replies with other whitespace around the thinking than the family's template writes (SmolLM3's
# is one newline, Granite's none, R1's two): the part that the template passes through
OFF_THE_HABIT = {
    "smollm3": (
        ("<think>", "Add them.", "</think>", "\n\nIt is 4.", "<|im_end|>"),
        "<think>Add them.</think>\n\nIt is 4.",
    ),
    "granite": (
        ("\n<think>\nAdd them.\n</think>\n\n", "<response>It is 4.</response>", "<|end_of_text|>"),
        "\n<think>\nAdd them.\n</think>\n\n<response>It is 4.</response>",
    ),
    "deepseek-r1-qwen": (("Add them.\n", "</think>", "\nIt is 4.", "<｜end▁of▁sentence｜>"), "\nIt is 4."),
}


@pytest.mark.parametrize("engine", sorted(OFF_THE_HABIT), indirect=True)
def test_a_reply_goes_back_into_the_next_prompt_byte_for_byte(engine):
    """The engine remembers how its model wrote a reply (model.inference.reply_stream): the next turn's
    prompt holds those very bytes, not the family's usual layout."""
    family, llama = engine
    reply, kept = OFF_THE_HABIT[family]
    prompt_text, rendered, written = next_turn(family, llama, CASES[family], reply)
    assert prompt_text == rendered
    assert kept in written and f"{kept}{FAMILIES[family].end_of_turn}" in prompt_text


# what each reasoning family's model wrote before it was stopped inside its thinking
STOPPED_INSIDE = {
    "deepseek-r1-qwen": ("Add them",),  # the generation prompt opened the block
    "smollm3": ("<think>", "\nAdd them"),
    "granite": ("<think>\nAdd them",),
    "mistral": ("[THINK]", "Add them"),
}


@pytest.mark.parametrize("engine", sorted(STOPPED_INSIDE), indirect=True)
def test_a_reply_stopped_inside_its_thinking_is_continued_from_inside_it(engine):
    """Continuing sends the prompt the reply started from and what the model wrote, the thinking
    block still open; what the model writes next is thinking until it closes the block."""
    family, llama = engine
    case = CASES[family]
    stopped_ids = ids_of(llama, *STOPPED_INSIDE[family])
    llama.script[:] = list(stopped_ids)
    stopped = collect_reply(llama.chat([Message("user", "2+2?")], replace(params(case), max_tokens=len(stopped_ids))))
    assert stopped.finished.reason == "length" and stopped.text == "" and "Add them" in stopped.thinking
    started = llama.fit([Message("user", "2+2?")], 16).ids
    conversation = [Message("user", "2+2?"), Message("assistant", "", reasoning=stopped.thinking)]
    continued = llama.fit(conversation, 16, continue_last=True).ids
    detokenize = llama.llm.detokenize
    assert detokenize(continued, special=True) == detokenize(started + stopped_ids, special=True)
    fmt = llama.prompt_format.continuation_reasoning(conversation)
    assert fmt is not None and fmt.starts_inside
    answer = "<response>It is 4.</response>" if family == "granite" else "It is 4."
    llama.script[:] = ids_of(llama, " up.", fmt.close, answer, FAMILIES[family].end_of_turn)
    more = collect_reply(llama.chat(conversation, params(case), continue_last=True))
    assert (more.thinking, more.text) == (" up.", "It is 4.")


def test_the_inspector_names_the_end_token_it_drew(engine):
    """The end of turn stands for no text: the inspector shows it by its name in the vocabulary."""
    family, llama = engine
    end_of_turn = FAMILIES[family].end_of_turn
    llama.script[:] = ids_of(llama, "It is 4.", end_of_turn)
    steps: list[dict] = []
    collect_reply(llama.chat([Message("user", "2+2?")], SamplingParams(temperature=0.0), inspect=steps.append))
    assert (steps[-1]["text"], steps[-1].get("control")) == (end_of_turn, True)
    assert all(not step.get("control") and step["text"] for step in steps[:-1])
