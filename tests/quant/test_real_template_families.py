"""More real families through the llama.cpp engine: DeepSeek-R1-Distill-Qwen, SmolLM3, Granite 3.3,
Llama 3.2 and Ministral 3 Reasoning (tests/helpers/foreign_gguf.py: their real templates and token
layouts, random weights). Random weights never write an end of thinking, so the logits are scripted
(the ids a real model would sample); the vocabulary, the detokenizing, the stop tokens and the next
turn's prompt are llama.cpp's and the real templates'. For each: the reasoning layout is detected
where the template has one, a reply is split and stops on the template's end token, and the next
turn's prompt ids detokenize to exactly what transformers renders."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from model.inference.backend import collect_reply
from model.inference.sampling import SamplingParams
from model.text.chat_format import Message
from model.text.reasoning import thinking_kwargs
from tests.helpers.foreign_gguf import FAMILIES, REAL_TEMPLATES, write_foreign_gguf

pytest.importorskip("llama_cpp")


@dataclass(frozen=True)
class Case:
    reasoning: str | None  # the layout detect_format should find (model.text.reasoning), None: none
    thinking: bool | None  # the chat's thinking setting for the reply
    reply: tuple[str, ...]  # what the model writes: control tokens by name, text, then the end token
    thought: str
    answer: str
    earlier: str = "written"  # the earlier reply for transformers: "written" (all the model wrote) or "fields"


CASES = {
    # thinking on: the generation prompt opens `<think>\n`, the reply starts inside it
    "deepseek-r1-qwen": Case(
        "think", True, ("Add them.\n", "</think>", "\n\nIt is 4.", "<｜end▁of▁sentence｜>"), "Add them.\n", "It is 4."
    ),
    "smollm3": Case(
        "think",
        None,
        ("<think>", "\nAdd them.\n", "</think>", "\n\nIt is 4.", "<|im_end|>"),
        "\nAdd them.\n",
        "It is 4.",
    ),
    "granite": Case(
        "granite",
        True,
        ("<think>\nAdd them.\n</think>\n\n", "<response>It is 4.</response>", "<|end_of_text|>"),
        "\nAdd them.\n",
        "It is 4.",
    ),
    "llama3.2": Case(None, None, ("It is 4.", "<|eot_id|>"), "", "It is 4."),
    # the template reads `thinking` (of a content block): the reply goes as fields, and a string
    # content's thinking is not written back
    "mistral": Case(
        "mistral", None, ("[THINK]", "Add them.", "[/THINK]", "It is 4.", "</s>"), "Add them.", "It is 4.", "fields"
    ),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def engine(request, tmp_path_factory):
    from quant.llama_engine import LlamaEngine

    family = request.param
    path = write_foreign_gguf(  # the toy vocabulary spells the long system prompts (Granite, Mistral) out
        tmp_path_factory.mktemp("families") / f"{family}.gguf", family, context_length=4096
    )
    engine = LlamaEngine.load(path, n_threads=1, state_cache_mb=0)
    script: list[int] = []

    def evaluate(start: int, ids: list[int]) -> np.ndarray:
        logits = np.zeros(engine.n_vocab, dtype=np.float32)
        logits[script.pop(0)] = 100.0
        return logits

    engine.evaluate = evaluate
    engine.script = script
    yield family, engine
    engine.close()


def ids_of(engine, *parts: str) -> list[int]:
    vocab = engine.prompt_format.vocab
    out: list[int] = []
    for part in parts:
        out += [vocab.control_tokens[part]] if part in vocab.control_tokens else vocab.encode(part)
    return out


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


def test_the_next_turn_is_rendered_as_transformers_renders_it(engine):
    reference = pytest.importorskip("transformers.utils.chat_template_utils")
    family, llama = engine
    case = CASES[family]
    reply_ids = ids_of(llama, *case.reply)
    llama.script[:] = list(reply_ids)
    reply = collect_reply(llama.chat([Message("user", "2+2?")], params(case)))
    conversation = [
        Message("user", "2+2?"),
        Message("assistant", reply.text, reasoning=reply.thinking),
        Message("user", "Sure?"),
    ]
    prompt = llama.fit(conversation, 16).ids
    # The earlier reply as transformers gets it: the answer with its thinking as fields (as HF passes
    # them) for a template that reads them, else the whole text the model wrote (a template splits the
    # thinking off itself). Replies here are written in the layout real models use, which is also the
    # one the engine writes back from (thinking, answer) (model.text.reasoning.join_reply).
    template = llama.prompt_format.template
    written = llama.llm.detokenize(reply_ids[:-1], special=True).decode()
    if family == "deepseek-r1-qwen":
        written = "<think>\n" + written  # the generation prompt opened the block
    if "reasoning_content" in template or case.earlier == "fields":
        fields = {"reasoning_content": reply.thinking, "thinking": reply.thinking}
        earlier = {"role": "assistant", "content": reply.text, **fields}
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
    assert llama.llm.detokenize(prompt, special=True).decode() == rendered[0]
