"""Reasoning through llama.cpp's own vocabulary and detokenizer: small GGUF files with Qwen3's and
gpt-oss's real templates and token layouts (tests/helpers/foreign_gguf.py). Random weights never
write `</think>`, so the engine's logits are scripted (the ids a real model would sample); the
vocabulary, the detokenizing (gpt-oss's channel markers are control tokens llama.cpp writes as
nothing), the stop tokens and the next turn's prompt are llama.cpp's and the real templates'."""

from __future__ import annotations

import pytest

from model.inference.backend import collect_reply
from model.inference.sampling import SamplingParams
from model.text.chat_format import Message
from tests.helpers.foreign_gguf import write_foreign_gguf
from tests.helpers.scripted_llama import ids_of, scripted_engine

pytest.importorskip("llama_cpp")
GREEDY = SamplingParams(temperature=0.0, max_tokens=100)


@pytest.fixture(scope="module", params=["qwen3", "gpt-oss"])
def engine(request, tmp_path_factory):
    path = write_foreign_gguf(tmp_path_factory.mktemp("reasoning") / f"{request.param}.gguf", request.param)
    engine = scripted_engine(path)
    yield request.param, engine
    engine.close()


REPLIES = {
    "qwen3": ("<think>", "\nAdd them.\n", "</think>", "\n\nIt is 4.", "<|im_end|>"),
    "gpt-oss": (
        "<|channel|>",
        "analysis",
        "<|message|>",
        "Add them.",
        "<|end|>",  # not a stop token: llama.cpp leaves <|end|> out of gpt-oss's end-of-generation tokens
        "<|start|>",
        "assistant",
        "<|channel|>",
        "final",
        "<|message|>",
        "It is 4.",
        "<|return|>",
    ),
}
THOUGHTS = {"qwen3": "\nAdd them.\n", "gpt-oss": "Add them."}


def test_a_real_layouts_reply_is_split_into_thinking_and_answer(engine):
    family, llama = engine
    assert llama.prompt_format.reasoning_format is not None
    stops = {llama.prompt_format.vocab.token_text(i) for i in llama.prompt_format.stop_ids}
    assert "<|end|>" not in stops  # gpt-oss's analysis ends in <|end|>, and the reply goes on
    reply_ids = ids_of(llama, *REPLIES[family])
    llama.script[:] = reply_ids
    reply = collect_reply(llama.chat([Message("user", "2+2?")], GREEDY))
    assert (reply.thinking, reply.text) == (THOUGHTS[family], "It is 4.")
    assert reply.finished is not None and reply.finished.reason == "stop"
    assert reply.token_ids == reply_ids[:-1]
    assert reply.finished.thinking_tokens > 0


def test_the_next_turn_passes_the_thinking_as_the_reference_renders_it(engine):
    reference = pytest.importorskip("transformers.utils.chat_template_utils")
    family, llama = engine
    llama.script[:] = ids_of(llama, *REPLIES[family])
    reply = collect_reply(llama.chat([Message("user", "2+2?")], GREEDY))
    conversation = [
        Message("user", "2+2?"),
        Message("assistant", reply.text, reasoning=reply.thinking),
        Message("user", "Sure?"),
    ]
    prompt = llama.fit(conversation, 16).ids
    as_reference = [
        {
            "role": m.role,
            "content": m.content,
            **({"reasoning_content": m.reasoning, "thinking": m.reasoning} if m.reasoning else {}),
        }
        for m in conversation
    ]
    template = llama.prompt_format.template
    rendered, _ = reference.render_jinja_template(
        conversations=[as_reference], chat_template=template, add_generation_prompt=True
    )
    assert llama.llm.detokenize(prompt, special=True).decode() == rendered[0]
    assert llama.prompt_format.prompt_text(conversation) == rendered[0]


def test_the_inspectors_steps_mark_the_thinking_tokens(engine):
    family, llama = engine
    reply_ids = ids_of(llama, *REPLIES[family])
    llama.script[:] = list(reply_ids)
    steps: list[dict] = []
    reply = collect_reply(llama.chat([Message("user", "2+2?")], GREEDY, inspect=steps.append))
    assert [step["token_id"] for step in steps] == reply_ids  # the stop token's too
    marks = [bool(step.get("thinking")) for step in steps]
    assert reply.finished is not None and sum(marks) == reply.finished.thinking_tokens > 0
    marked = [i for i, mark in enumerate(marks) if mark]
    assert marked == list(range(marked[0], marked[-1] + 1))  # one run: the thinking (an opening marker
    # llama.cpp sees whole only with its last token counts from there, as thinking_tokens does)

    def text(indices) -> str:
        return llama.llm.detokenize([reply_ids[i] for i in indices], special=True).decode()

    assert THOUGHTS[family] in text(marked)
    answer = text(i for i in range(len(reply_ids)) if not marks[i])
    assert "It is 4." in answer and "Add them." not in answer
