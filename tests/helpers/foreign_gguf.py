"""Tiny GGUF files of foreign model families, good and deliberately broken.

Each good file has random weights (seeded) at toy sizes, but the real
architecture, tokenizer kind, special-token layout and chat template (the
template text verbatim as the real instruct model ships it) of its family:

- "llama3": Llama 3.1 Instruct: architecture "llama", byte-level BPE ("gpt2",
  pre "llama-bpe"), <|begin_of_text|> ... <|eot_id|>.
- "qwen2": Qwen2 Instruct: architecture "qwen2", byte-level BPE (pre "qwen2"),
  ChatML (<|im_start|>, <|im_end|>), eos = <|im_end|>.
- "gemma": Gemma instruct: architecture "gemma", SentencePiece ("llama") with
  scores, the 256 byte tokens <0x00>..<0xFF>, <start_of_turn>/<end_of_turn>.
- "plain": a base model: the llama3 vocabulary with no chat template.
- "qwen3", "gpt-oss": Qwen3 (`<think>` as text tokens) and gpt-oss (harmony's control tokens).
- "deepseek-r1-qwen": DeepSeek-R1-Distill-Qwen: qwen2's tensors, pre "deepseek-r1-qwen",
  <｜begin▁of▁sentence｜> / <｜end▁of▁sentence｜> control, <｜User｜>, <｜Assistant｜>, <think> as text
  tokens (the real file's "special": false), a template whose generation prompt opens `<think>\n`.
- "smollm3": SmolLM3: Llama 3's byte-level BPE with <|im_start|>/<|im_end|> (eos) and `<think>`
  as text; no bos in the prompt.
- "granite": Granite 3.3 Instruct: bos = eos = <|end_of_text|>, <|start_of_role|> / <|end_of_role|>,
  pre "refact"; thinking in `<think>` then `<response>` (text, not tokens).
- "llama3.2": Llama 3.2 Instruct: llama3's tokens with its own template (today's date).
- "mistral": Ministral 3 Reasoning: Tekken (byte-level BPE, pre "tekken") with the control tokens
  first as in the real vocabulary (<unk> <s> </s> [INST] ... [THINK] [/THINK]).

- "gemma3": Gemma 3 instruct: architecture "gemma3" (Q/K norms, post-attention and post-FFN norms),
  Gemma's SentencePiece vocabulary, google/gemma-3-4b-it's template (a system message goes at the start
  of the first user turn).

The "gemma" family's template is gemma-2-2b-it's, verbatim (a test checks it against the file).

Token ids are compact (specials right after the learned tokens), not the real
models' (128000, 151643, ...). FAMILIES holds the ids of these files.

The broken files (write_broken_gguf) read fine with the gguf package but make
llama.cpp abort or crash the whole process; quant.gguf_check must refuse them.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import gguf
import numpy as np

from model.text.byte_level import bytes_to_unicode, token_string
from quant.gguf_vocab import merges_from_ranks

# Verbatim from meta-llama/Llama-3.1-8B-Instruct (tokenizer_config.json), trailing newline included.
LLAMA31_INSTRUCT_TEMPLATE = (
    r"""{{- bos_token }}
{%- if custom_tools is defined %}
    {%- set tools = custom_tools %}
{%- endif %}
{%- if not tools_in_user_message is defined %}
    {%- set tools_in_user_message = true %}
{%- endif %}
{%- if not date_string is defined %}
    {%- set date_string = "26 Jul 2024" %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}

{#- This block extracts the system message, so we can slot it into the right place. #}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}

{#- System message + builtin tools #}
{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
{%- if builtin_tools is defined or tools is not none %}
    {{- "Environment: ipython\n" }}
{%- endif %}
{%- if builtin_tools is defined %}
    {{- "Tools: " + builtin_tools | reject('equalto', 'code_interpreter') | join(", ") + "\n\n"}}
{%- endif %}
{{- "Cutting Knowledge Date: December 2023\n" }}
{{- "Today Date: " + date_string + "\n\n" }}
{%- if tools is not none and not tools_in_user_message %}
    {{- "You have access to the following functions. To call a function, please respond with JSON """
    r"""for a function call." }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
{%- endif %}
{{- system_message }}
{{- "<|eot_id|>" }}

{#- Custom tools are passed in a user message with some extra guidance #}
{%- if tools_in_user_message and not tools is none %}
    {#- Extract the first user message so we can plug it in here #}
    {%- if messages | length != 0 %}
        {%- set first_user_message = messages[0]['content']|trim %}
        {%- set messages = messages[1:] %}
    {%- else %}
        {{- raise_exception("Cannot put tools in the first user message when there's no first user message!") }}
{%- endif %}
    {{- '<|start_header_id|>user<|end_header_id|>\n\n' -}}
    {{- "Given the following functions, please respond with a JSON for a function call " }}
    {{- "with its proper arguments that best answers the given prompt.\n\n" }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
    {{- first_user_message + "<|eot_id|>"}}
{%- endif %}

{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] """
    r"""| trim + '<|eot_id|>' }}
    {%- elif 'tool_calls' in message %}
        {%- if not message.tool_calls|length == 1 %}
            {{- raise_exception("This model only supports single tool-calls at once!") }}
        {%- endif %}
        {%- set tool_call = message.tool_calls[0].function %}
        {%- if builtin_tools is defined and tool_call.name in builtin_tools %}
            {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
            {{- "<|python_tag|>" + tool_call.name + ".call(" }}
            {%- for arg_name, arg_val in tool_call.arguments | items %}
                {{- arg_name + '="' + arg_val + '"' }}
                {%- if not loop.last %}
                    {{- ", " }}
                {%- endif %}
                {%- endfor %}
            {{- ")" }}
        {%- else  %}
            {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
            {{- '{"name": "' + tool_call.name + '", ' }}
            {{- '"parameters": ' }}
            {{- tool_call.arguments | tojson }}
            {{- "}" }}
        {%- endif %}
        {%- if builtin_tools is defined %}
            {#- This means we're in ipython mode #}
            {{- "<|eom_id|>" }}
        {%- else %}
            {{- "<|eot_id|>" }}
        {%- endif %}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\n\n" }}
        {%- if message.content is mapping or message.content is iterable %}
            {{- message.content | tojson }}
        {%- else %}
            {{- message.content }}
        {%- endif %}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}
"""
)

# Verbatim from Qwen/Qwen2-7B-Instruct (tokenizer_config.json).
QWEN2_INSTRUCT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Verbatim from google/gemma-2-2b-it (gemma-7b-it ships the same); it refuses a system message.
GEMMA_INSTRUCT_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}"
    "{% else %}{% set role = message['role'] %}{% endif %}"
    "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"
)

# Text the toy byte-level BPE vocabularies are trained on: plain English, so
# that ordinary words in the tests are a few tokens long.
BPE_TRAINING_TEXT = (
    "Hello! You are a helpful assistant. The user asks a question and the assistant answers it. "
    "What is the capital of France? The capital of France is Paris. "
    "Tell me a story about the sea, the wind and the stars. Once upon a time there was a ship. "
    "Thank you, that was a good answer. Another question: how are you today? I am well, thanks. "
)
LEARNED_MERGES = 128  # multi-byte tokens on top of the 256 single bytes

# SentencePiece words for the Gemma vocabulary: each becomes "▁word" and the
# prefixes that SentencePiece merges it through.
SPM_WORDS = (
    "Hello",
    "hello",
    "the",
    "user",
    "model",
    "system",
    "assistant",
    "helpful",
    "question",
    "answer",
    "What",
    "is",
    "capital",
    "of",
    "France",
    "Paris",
    "You",
    "are",
    "a",
    "and",
    "Another",
)
SPM_CHARACTERS = "▁\n" + string.ascii_letters + string.digits + string.punctuation


@dataclass(frozen=True)
class Vocabulary:
    tokens: list[str]
    types: list[int]
    scores: list[float] | None = None  # SentencePiece only
    merges: list[str] | None = None  # byte-level BPE only

    def id_of(self, token: str) -> int:
        return self.tokens.index(token)


@lru_cache(maxsize=1)
def byte_level_tokens() -> tuple[bytes, ...]:
    """Token bytes in id order: the 256 single bytes in GPT-2's order ("!" is
    id 0, as in the real Llama 3 and Qwen2 vocabularies), then learned merges."""
    from model.text.bpe import train_bpe

    ranks = train_bpe([BPE_TRAINING_TEXT], 256 + LEARNED_MERGES)
    learned = [token for token, _ in sorted(ranks.items(), key=lambda kv: kv[1]) if len(token) > 1]
    if len(learned) != LEARNED_MERGES:
        raise RuntimeError(f"the BPE training text yields only {len(learned)} merges")
    return tuple(bytes([b]) for b in bytes_to_unicode()) + tuple(learned)


def byte_level_vocabulary(
    special_tokens: tuple[str, ...],
    pad_to_multiple: int = 1,
    text_tokens: tuple[str, ...] = (),
    specials_first: bool = False,
) -> Vocabulary:
    """Learned tokens, then the special tokens (CONTROL), then added tokens that are text
    (USER_DEFINED: Qwen3's `<think>`), then "[PADn]" fillers (UNUSED) up to a multiple of
    pad_to_multiple, as convert_hf_to_gguf pads. specials_first: the special tokens come
    before the learned ones (Mistral's Tekken)."""
    learned = byte_level_tokens()
    ranks = {token: rank for rank, token in enumerate(learned)}
    if specials_first:
        tokens = list(special_tokens) + [token_string(token) for token in learned] + list(text_tokens)
        types = (
            [gguf.TokenType.CONTROL] * len(special_tokens)
            + [gguf.TokenType.NORMAL] * len(learned)
            + [gguf.TokenType.USER_DEFINED] * len(text_tokens)
        )
    else:
        tokens = [token_string(token) for token in learned] + list(special_tokens) + list(text_tokens)
        types = (
            [gguf.TokenType.NORMAL] * len(learned)
            + [gguf.TokenType.CONTROL] * len(special_tokens)
            + [gguf.TokenType.USER_DEFINED] * len(text_tokens)
        )
    types = [gguf.TokenType.UNKNOWN if token == "<unk>" else kind for token, kind in zip(tokens, types)]
    while len(tokens) % pad_to_multiple:
        tokens.append(f"[PAD{len(tokens)}]")
        types.append(gguf.TokenType.UNUSED)
    return Vocabulary(tokens=tokens, types=[int(t) for t in types], merges=merges_from_ranks(ranks))


def byte_token(value: int) -> str:
    return f"<0x{value:02X}>"


def sentencepiece_vocabulary(with_byte_tokens: bool = True) -> Vocabulary:
    """Gemma's layout: <pad> <eos> <bos> <unk> first, the turn markers, the 256
    byte tokens (byte fallback for text outside the pieces), then pieces."""
    control = [
        ("<pad>", gguf.TokenType.CONTROL),
        ("<eos>", gguf.TokenType.CONTROL),
        ("<bos>", gguf.TokenType.CONTROL),
        ("<unk>", gguf.TokenType.UNKNOWN),
        ("<start_of_turn>", gguf.TokenType.CONTROL),
        ("<end_of_turn>", gguf.TokenType.CONTROL),
    ]
    byte_tokens = [(byte_token(b), gguf.TokenType.BYTE) for b in range(256)] if with_byte_tokens else []
    pieces = list(
        dict.fromkeys(
            list(SPM_CHARACTERS) + [("▁" + word)[:length] for word in SPM_WORDS for length in range(2, len(word) + 2)]
        )
    )
    tokens = [text for text, _ in control + byte_tokens] + pieces
    types = [int(kind) for _, kind in control + byte_tokens] + [int(gguf.TokenType.NORMAL)] * len(pieces)
    # SentencePiece merges the adjacent pair whose joined piece scores highest.
    scores = [0.0] * (len(control) + len(byte_tokens)) + [-float(i) for i in range(len(pieces))]
    return Vocabulary(tokens=tokens, types=types, scores=scores)


LLAMA31_SPECIAL_TOKENS = (
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>",
    "<|reserved_special_token_2|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eom_id|>",
    "<|eot_id|>",
    "<|python_tag|>",
) + tuple(f"<|reserved_special_token_{i}|>" for i in range(3, 8))
QWEN2_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
THINK_TOKENS = ("<think>", "</think>")  # Qwen3's: added tokens that are text ("special": false), not control
# gpt-oss's harmony tokens (o200k_harmony): all control tokens
HARMONY_TOKENS = (
    "<|startoftext|>",
    "<|endoftext|>",
    "<|return|>",
    "<|constrain|>",
    "<|channel|>",
    "<|start|>",
    "<|end|>",
    "<|message|>",
    "<|call|>",
)
REAL_TEMPLATES = Path(__file__).parents[1] / "data" / "chat_templates"
DEEPSEEK_SPECIAL_TOKENS = ("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>")
DEEPSEEK_TEXT_TOKENS = (  # the distills' added tokens that are "special": false, as the real file has them
    "<｜User｜>",
    "<｜Assistant｜>",
    "<think>",
    "</think>",
    "<｜tool▁calls▁begin｜>",
    "<｜tool▁calls▁end｜>",
    "<｜tool▁call▁begin｜>",
    "<｜tool▁call▁end｜>",
    "<｜tool▁outputs▁begin｜>",
    "<｜tool▁outputs▁end｜>",
    "<｜tool▁output▁begin｜>",
    "<｜tool▁output▁end｜>",
    "<｜tool▁sep｜>",
)
SMOLLM3_SPECIAL_TOKENS = ("<|begin_of_text|>", "<|end_of_text|>", "<|im_start|>", "<|im_end|>")
GRANITE_SPECIAL_TOKENS = (
    "<|end_of_text|>",
    "<|start_of_role|>",
    "<|end_of_role|>",
    "<|tool_call|>",
    "<|start_of_cite|>",
    "<|end_of_cite|>",
    "<|start_of_plugin|>",
    "<|end_of_plugin|>",
)
TEKKEN_SPECIAL_TOKENS = (  # Ministral 3's first ids, in order
    "<unk>",
    "<s>",
    "</s>",
    "[INST]",
    "[/INST]",
    "[AVAILABLE_TOOLS]",
    "[/AVAILABLE_TOOLS]",
    "[TOOL_RESULTS]",
    "[/TOOL_RESULTS]",
    "[TOOL_CALLS]",
    "[IMG]",
    "<pad>",
    "[IMG_BREAK]",
    "[IMG_END]",
    "[PREFIX]",
    "[MIDDLE]",
    "[SUFFIX]",
    "[SYSTEM_PROMPT]",
    "[/SYSTEM_PROMPT]",
    "[TOOL_CONTENT]",
    "[ARGS]",
    "[CALL_ID]",
    "[THINK]",
    "[/THINK]",
)


def real_template(name: str) -> str:
    """A template from tests/data/chat_templates, verbatim."""
    return (REAL_TEMPLATES / f"{name}.jinja").read_text(encoding="utf-8")


@dataclass(frozen=True)
class Family:
    """One model family: what its GGUF files hold, and the ids in ours."""

    name: str
    architecture: str
    tokenizer_model: str  # tokenizer.ggml.model: "gpt2" (byte-level BPE) or "llama" (SentencePiece)
    tokenizer_pre: str
    special_tokens: tuple[str, ...]  # the named special tokens: bos, eos, the chat markers
    bos: str
    eos: str
    eot: str | None  # written as tokenizer.ggml.eot_token_id; None: not written (llama.cpp guesses it by text)
    end_of_turn: str  # the text that ends an assistant turn (for a base model: its eos)
    chat_template: str | None
    bos_id: int
    eos_id: int
    eot_id: int | None
    end_of_turn_id: int
    add_bos_token: bool | None  # tokenizer.ggml.add_bos_token; None: not written
    vocab_size: int
    # hyper-parameters of the real family that the toy copies
    head_count_kv: int
    layer_norm_epsilon: float
    rope_freq_base: float
    tied_output: bool  # no output.weight: the output reuses token_embd


def vocabulary_of(family: str, with_byte_tokens: bool = True) -> Vocabulary:
    if family in ("llama3", "plain"):
        return byte_level_vocabulary(LLAMA31_SPECIAL_TOKENS)
    if family == "qwen2":
        return byte_level_vocabulary(QWEN2_SPECIAL_TOKENS, pad_to_multiple=64)
    if family == "qwen3":
        return byte_level_vocabulary(QWEN2_SPECIAL_TOKENS, pad_to_multiple=64, text_tokens=THINK_TOKENS)
    if family == "gpt-oss":
        return byte_level_vocabulary(HARMONY_TOKENS)
    if family in ("gemma", "gemma3"):
        return sentencepiece_vocabulary(with_byte_tokens)
    if family == "deepseek-r1-qwen":
        return byte_level_vocabulary(DEEPSEEK_SPECIAL_TOKENS, pad_to_multiple=64, text_tokens=DEEPSEEK_TEXT_TOKENS)
    if family == "smollm3":
        return byte_level_vocabulary(SMOLLM3_SPECIAL_TOKENS, text_tokens=THINK_TOKENS)
    if family == "granite":
        return byte_level_vocabulary(GRANITE_SPECIAL_TOKENS)
    if family == "llama3.2":
        return byte_level_vocabulary(LLAMA31_SPECIAL_TOKENS)
    if family == "mistral":
        return byte_level_vocabulary(TEKKEN_SPECIAL_TOKENS, specials_first=True)
    raise ValueError(f"unknown family {family!r} (known: {', '.join(FAMILIES)})")


def _family(
    name,
    architecture,
    tokenizer_model,
    tokenizer_pre,
    special_tokens,
    bos,
    eos,
    eot,
    end_of_turn,
    chat_template,
    add_bos_token,
    **hyper,
) -> Family:
    vocab = vocabulary_of(name)
    return Family(
        name=name,
        architecture=architecture,
        tokenizer_model=tokenizer_model,
        tokenizer_pre=tokenizer_pre,
        special_tokens=special_tokens,
        bos=bos,
        eos=eos,
        eot=eot,
        end_of_turn=end_of_turn,
        chat_template=chat_template,
        bos_id=vocab.id_of(bos),
        eos_id=vocab.id_of(eos),
        eot_id=None if eot is None else vocab.id_of(eot),
        end_of_turn_id=vocab.id_of(end_of_turn),
        add_bos_token=add_bos_token,
        vocab_size=len(vocab.tokens),
        **hyper,
    )


LLAMA3_TOKENS = ("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")

FAMILIES: dict[str, Family] = {
    "llama3": _family(
        "llama3",
        "llama",
        "gpt2",
        "llama-bpe",
        LLAMA3_TOKENS,
        bos="<|begin_of_text|>",
        eos="<|end_of_text|>",
        eot="<|eot_id|>",
        end_of_turn="<|eot_id|>",
        chat_template=LLAMA31_INSTRUCT_TEMPLATE,
        add_bos_token=None,
        head_count_kv=2,
        layer_norm_epsilon=1e-5,
        rope_freq_base=500000.0,
        tied_output=False,
    ),
    # Qwen2-Instruct files set eos to <|im_end|> and write no eot id.
    "qwen2": _family(
        "qwen2",
        "qwen2",
        "gpt2",
        "qwen2",
        QWEN2_SPECIAL_TOKENS,
        bos="<|endoftext|>",
        eos="<|im_end|>",
        eot=None,
        end_of_turn="<|im_end|>",
        chat_template=QWEN2_INSTRUCT_TEMPLATE,
        add_bos_token=False,
        head_count_kv=2,
        layer_norm_epsilon=1e-6,
        rope_freq_base=1000000.0,
        tied_output=False,
    ),
    # convert_hf_to_gguf writes <end_of_turn> as Gemma's eot; one KV head as in Gemma 2B.
    "gemma": _family(
        "gemma",
        "gemma",
        "llama",
        "default",
        ("<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"),
        bos="<bos>",
        eos="<eos>",
        eot="<end_of_turn>",
        end_of_turn="<end_of_turn>",
        chat_template=GEMMA_INSTRUCT_TEMPLATE,
        add_bos_token=True,
        head_count_kv=1,
        layer_norm_epsilon=1e-6,
        rope_freq_base=10000.0,
        tied_output=True,
    ),
    # Qwen3's tokens and real template (thinking in <think>, which are text tokens), on qwen2's tensors.
    "qwen3": _family(
        "qwen3",
        "qwen2",
        "gpt2",
        "qwen2",
        QWEN2_SPECIAL_TOKENS,
        bos="<|endoftext|>",
        eos="<|im_end|>",
        eot=None,
        end_of_turn="<|im_end|>",
        chat_template=(REAL_TEMPLATES / "Qwen-Qwen3-0.6B.jinja").read_text(encoding="utf-8"),
        add_bos_token=False,
        head_count_kv=2,
        layer_norm_epsilon=1e-6,
        rope_freq_base=1000000.0,
        tied_output=False,
    ),
    # gpt-oss's harmony tokens and real template (analysis / final channels), on llama's tensors.
    "gpt-oss": _family(
        "gpt-oss",
        "llama",
        "gpt2",
        "llama-bpe",
        HARMONY_TOKENS,
        bos="<|startoftext|>",
        eos="<|return|>",
        eot=None,
        end_of_turn="<|return|>",  # a reply's end (<|end|> ends a channel, and llama.cpp does not stop there)
        chat_template=(REAL_TEMPLATES / "openai-gpt-oss-120b.jinja").read_text(encoding="utf-8"),
        add_bos_token=False,
        head_count_kv=2,
        layer_norm_epsilon=1e-5,
        rope_freq_base=150000.0,
        tied_output=False,
    ),
    # DeepSeek-R1-Distill-Qwen: Qwen2.5's tensors, DeepSeek's markers; the file adds bos.
    "deepseek-r1-qwen": _family(
        "deepseek-r1-qwen",
        "qwen2",
        "gpt2",
        "deepseek-r1-qwen",
        DEEPSEEK_SPECIAL_TOKENS,
        bos="<｜begin▁of▁sentence｜>",
        eos="<｜end▁of▁sentence｜>",
        eot=None,
        end_of_turn="<｜end▁of▁sentence｜>",
        chat_template=real_template("deepseek-ai-DeepSeek-R1-Distill-Qwen-32B"),
        add_bos_token=True,
        head_count_kv=2,
        layer_norm_epsilon=1e-5,
        rope_freq_base=1000000.0,
        tied_output=False,
    ),
    # SmolLM3: Llama 3's tokenizer with ChatML turns (on llama's tensors: llama.cpp's smollm3 is llama
    # with some layers unroped).
    "smollm3": _family(
        "smollm3",
        "llama",
        "gpt2",
        "llama-bpe",
        SMOLLM3_SPECIAL_TOKENS,
        bos="<|begin_of_text|>",
        eos="<|im_end|>",
        eot=None,
        end_of_turn="<|im_end|>",
        chat_template=real_template("HuggingFaceTB-SmolLM3-3B"),
        add_bos_token=False,
        head_count_kv=2,
        layer_norm_epsilon=1e-6,
        rope_freq_base=5000000.0,
        tied_output=True,
    ),
    # Granite 3.3: <|end_of_text|> is bos, eos and the end of each turn (on llama's tensors: llama.cpp's
    # granite is llama with scales).
    "granite": _family(
        "granite",
        "llama",
        "gpt2",
        "refact",
        GRANITE_SPECIAL_TOKENS,
        bos="<|end_of_text|>",
        eos="<|end_of_text|>",
        eot=None,
        end_of_turn="<|end_of_text|>",
        chat_template=real_template("ibm-granite-granite-3.3-2B-Instruct"),
        add_bos_token=False,
        head_count_kv=2,
        layer_norm_epsilon=1e-5,
        rope_freq_base=10000000.0,
        tied_output=True,
    ),
    "llama3.2": _family(
        "llama3.2",
        "llama",
        "gpt2",
        "llama-bpe",
        LLAMA3_TOKENS,
        bos="<|begin_of_text|>",
        eos="<|eot_id|>",  # Llama 3.2 Instruct's files name <|eot_id|> as eos
        eot="<|eot_id|>",
        end_of_turn="<|eot_id|>",
        chat_template=real_template("meta-llama-Llama-3.2-3B-Instruct"),
        add_bos_token=True,
        head_count_kv=2,
        layer_norm_epsilon=1e-5,
        rope_freq_base=500000.0,
        tied_output=True,
    ),
    # Ministral 3 Reasoning: Tekken, thinking in [THINK]...[/THINK] (control tokens), on llama's tensors.
    "mistral": _family(
        "mistral",
        "llama",
        "gpt2",
        "tekken",
        ("<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]", "[THINK]", "[/THINK]"),
        bos="<s>",
        eos="</s>",
        eot=None,
        end_of_turn="</s>",
        chat_template=real_template("mistralai-Ministral-3-14B-Reasoning-2512"),
        add_bos_token=True,
        head_count_kv=2,
        layer_norm_epsilon=1e-5,
        rope_freq_base=1000000.0,
        tied_output=False,
    ),
    "plain": _family(
        "plain",
        "llama",
        "gpt2",
        "llama-bpe",
        LLAMA3_TOKENS,
        bos="<|begin_of_text|>",
        eos="<|end_of_text|>",
        eot=None,
        end_of_turn="<|end_of_text|>",
        chat_template=None,
        add_bos_token=None,
        head_count_kv=2,
        layer_norm_epsilon=1e-5,
        rope_freq_base=500000.0,
        tied_output=False,
    ),
}
# Gemma 3's architecture and real template on the gemma family's tokens (Gemma 3's vocabulary is 262,144 pieces).
FAMILIES["gemma3"] = replace(
    FAMILIES["gemma"],
    name="gemma3",
    architecture="gemma3",
    chat_template=real_template("google-gemma-3-4b-it"),
    rope_freq_base=1000000.0,
)


@dataclass(frozen=True)
class FileOptions:
    """What write_foreign_gguf's keyword overrides may change."""

    name: str
    chat_template: str | None
    head_count_kv: int
    layer_norm_epsilon: float
    rope_freq_base: float
    embedding_length: int = 64
    head_count: int = 4
    block_count: int = 2
    feed_forward_length: int = 128
    context_length: int = 512
    byte_tokens: bool = True  # SentencePiece vocabularies only: write <0x00>..<0xFF>
    zero_sized_tensor: str | None = None  # write this tensor with a first dimension of 0
    file_type: int = int(gguf.LlamaFileType.MOSTLY_F16)
    seed: int = 0
    vocab_size: int | None = None  # pad the vocabulary to this many tokens (a real model's 151,936 or 262,144)
    weight_type: str = "F16"  # "Q8_0": the matrices quantized (their row length a multiple of 32), as in real files


def _tensors(family: Family, options: FileOptions, n_vocab: int) -> dict[str, np.ndarray]:
    """Random weights with llama.cpp's tensor names; numpy shapes are (out, in)."""
    rng = np.random.default_rng(options.seed)
    width, ff = options.embedding_length, options.feed_forward_length
    head_dim = width // options.head_count
    q_width, kv_width = options.head_count * head_dim, options.head_count_kv * head_dim

    def matrix(rows, cols):
        return (rng.standard_normal((rows, cols), dtype=np.float32) * 0.02).astype(np.float16)

    def norm():
        return np.ones(width, dtype=np.float32)

    tensors = {"token_embd.weight": matrix(n_vocab, width), "output_norm.weight": norm()}
    if not family.tied_output:
        tensors["output.weight"] = matrix(n_vocab, width)
    for block in range(options.block_count):
        prefix = f"blk.{block}."
        tensors |= {
            prefix + "attn_norm.weight": norm(),
            prefix + "attn_q.weight": matrix(q_width, width),
            prefix + "attn_k.weight": matrix(kv_width, width),
            prefix + "attn_v.weight": matrix(kv_width, width),
            prefix + "attn_output.weight": matrix(width, q_width),
            prefix + "ffn_norm.weight": norm(),
            prefix + "ffn_gate.weight": matrix(ff, width),
            prefix + "ffn_up.weight": matrix(ff, width),
            prefix + "ffn_down.weight": matrix(width, ff),
        }
        if family.architecture == "gemma3":  # per-head Q and K norms, norms after attention and after the FFN
            tensors |= {
                prefix + "attn_q_norm.weight": np.ones(head_dim, dtype=np.float32),
                prefix + "attn_k_norm.weight": np.ones(head_dim, dtype=np.float32),
                prefix + "post_attention_norm.weight": norm(),
                prefix + "post_ffw_norm.weight": norm(),
            }
        if family.architecture == "qwen2":  # Qwen2 has biases on Q, K and V
            for part, size in (("q", q_width), ("k", kv_width), ("v", kv_width)):
                tensors[f"{prefix}attn_{part}.bias"] = np.zeros(size, dtype=np.float32)
    if options.zero_sized_tensor is not None:
        original = tensors[options.zero_sized_tensor]
        tensors[options.zero_sized_tensor] = np.zeros((0,) + original.shape[1:], dtype=original.dtype)
    return tensors


def padded_vocabulary(vocab: Vocabulary, size: int | None) -> Vocabulary:
    """`vocab` grown to `size` tokens, as a real model's vocabulary is large: SentencePiece pieces
    with falling scores, or byte-level "[PADn]" fillers (UNUSED)."""
    if size is None or size <= len(vocab.tokens):
        return vocab
    extra = size - len(vocab.tokens)
    if vocab.scores is not None:
        lowest = min(vocab.scores, default=0.0)
        return replace(
            vocab,
            tokens=vocab.tokens + [f"\u2581w{i}" for i in range(extra)],
            types=vocab.types + [int(gguf.TokenType.NORMAL)] * extra,
            scores=vocab.scores + [lowest - 1.0 - i for i in range(extra)],
        )
    start = len(vocab.tokens)
    return replace(
        vocab,
        tokens=vocab.tokens + [f"[PAD{start + i}]" for i in range(extra)],
        types=vocab.types + [int(gguf.TokenType.UNUSED)] * extra,
    )


def _add_weight(writer: gguf.GGUFWriter, name: str, data: np.ndarray, weight_type: str) -> None:
    if weight_type == "F16" or data.ndim != 2 or data.shape[1] % 32:
        writer.add_tensor(name, data)
        return
    kind = gguf.GGMLQuantizationType[weight_type]
    writer.add_tensor(name, gguf.quants.quantize(data.astype(np.float32), kind), raw_dtype=kind)


def _write_vocabulary(writer: gguf.GGUFWriter, family: Family, vocab: Vocabulary) -> None:
    writer.add_tokenizer_model(family.tokenizer_model)
    writer.add_tokenizer_pre(family.tokenizer_pre)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.types)
    if vocab.scores is not None:
        writer.add_token_scores(vocab.scores)
    if vocab.merges is not None:
        writer.add_token_merges(vocab.merges)
    writer.add_bos_token_id(vocab.id_of(family.bos))
    writer.add_eos_token_id(vocab.id_of(family.eos))
    if family.eot is not None:
        writer.add_eot_token_id(vocab.id_of(family.eot))
    if family.add_bos_token is not None:
        writer.add_add_bos_token(family.add_bos_token)
    if family.tokenizer_model == "llama":
        writer.add_unk_token_id(vocab.id_of("<unk>"))
        writer.add_pad_token_id(vocab.id_of("<pad>"))
        writer.add_add_eos_token(False)
        writer.add_add_space_prefix(False)  # Gemma's SentencePiece adds no dummy prefix
    elif family.name in ("qwen2", "qwen3", "gpt-oss"):
        writer.add_pad_token_id(vocab.id_of("<|endoftext|>"))
    elif family.name == "deepseek-r1-qwen":
        writer.add_pad_token_id(vocab.id_of("<｜end▁of▁sentence｜>"))
    elif family.name == "mistral":
        writer.add_unk_token_id(vocab.id_of("<unk>"))
        writer.add_pad_token_id(vocab.id_of("<pad>"))
        writer.add_add_eos_token(False)


def write_foreign_gguf(path: str | Path, family: str, **overrides) -> Path:
    """Write a tiny model of `family` (a FAMILIES key) to `path`.

    Keyword overrides replace fields of FileOptions (sizes, layer_norm_epsilon,
    chat_template=None for none, byte_tokens=False, zero_sized_tensor=NAME,
    ...); an unknown keyword raises TypeError.
    """
    spec = FAMILIES.get(family)
    if spec is None:
        raise ValueError(f"unknown family {family!r} (known: {', '.join(FAMILIES)})")
    options = replace(
        FileOptions(
            name=f"toy-{family}",
            chat_template=spec.chat_template,
            head_count_kv=spec.head_count_kv,
            layer_norm_epsilon=spec.layer_norm_epsilon,
            rope_freq_base=spec.rope_freq_base,
        ),
        **overrides,
    )
    vocab = padded_vocabulary(vocabulary_of(family, with_byte_tokens=options.byte_tokens), options.vocab_size)
    head_dim = options.embedding_length // options.head_count
    path = Path(path)
    writer = gguf.GGUFWriter(str(path), spec.architecture)
    writer.add_name(options.name)
    writer.add_file_type(options.file_type)
    writer.add_context_length(options.context_length)
    writer.add_embedding_length(options.embedding_length)
    writer.add_block_count(options.block_count)
    writer.add_feed_forward_length(options.feed_forward_length)
    writer.add_head_count(options.head_count)
    writer.add_head_count_kv(options.head_count_kv)
    writer.add_layer_norm_rms_eps(options.layer_norm_epsilon)
    writer.add_rope_freq_base(options.rope_freq_base)
    if spec.architecture in ("gemma", "gemma3"):
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    else:
        writer.add_rope_dimension_count(head_dim)
    if spec.architecture == "llama":
        writer.add_vocab_size(len(vocab.tokens))
    _write_vocabulary(writer, spec, vocab)
    if options.chat_template is not None:
        writer.add_chat_template(options.chat_template)
    for name, data in _tensors(spec, options, len(vocab.tokens)).items():
        _add_weight(writer, name, data, options.weight_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


# Each kind: (family, overrides). All pass a plain gguf read. What llama.cpp
# (llama-cpp-python 0.3.36) does with them:
# - an epsilon that is NaN or negative: GGML_ASSERT(eps >= 0.0f) in the RMS
#   norm at the first eval, SIGABRT;
# - SentencePiece without <0x00>..<0xFF>: loads, then tokenizing a character
#   outside the pieces throws std::out_of_range through the C API: terminate;
# - feed_forward_length 0, so the FFN matrices have zero-sized dimensions:
#   GGML_ASSERT(!ggml_is_transposed(a)) while loading, SIGABRT. (A single
#   zero-sized tensor that disagrees with the hyper-parameters only fails the
#   load: "tensor ... has wrong shape".)
BROKEN_KINDS: dict[str, tuple[str, dict]] = {
    "nan_epsilon": ("llama3", {"layer_norm_epsilon": float("nan")}),
    "negative_epsilon": ("qwen2", {"layer_norm_epsilon": -1e-6}),
    "spm_without_bytes": ("gemma", {"byte_tokens": False}),
    "zero_sized_tensor": ("llama3", {"feed_forward_length": 0}),
}


def write_broken_gguf(path: str | Path, kind: str) -> Path:
    """Write a file of one of the BROKEN_KINDS, which llama.cpp cannot survive."""
    if kind not in BROKEN_KINDS:
        raise ValueError(f"unknown broken kind {kind!r} (known: {', '.join(BROKEN_KINDS)})")
    family, overrides = BROKEN_KINDS[kind]
    return write_foreign_gguf(path, family, name=f"broken-{kind}", **overrides)
