"""Models of other families (Llama 3, Qwen2, Gemma, Gemma 3, a base model) load in
llama.cpp and pass check_gguf; files that would abort llama.cpp do not pass."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import gguf
import numpy as np
import pytest

from quant.gguf_check import GGUFFileError, check_gguf, file_type_name, read_gguf
from tests.helpers.foreign_gguf import BROKEN_KINDS, FAMILIES, write_broken_gguf, write_foreign_gguf

# Characters outside every toy vocabulary: byte fallback (SentencePiece) or single bytes (BPE).
TEXT_OUTSIDE_VOCAB = "Hello, the user asks: héllo wörld ☃ 🙂"
CONVERSATION = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "How are you?"},
]
EXPECTED_PROMPTS = {
    "llama3": "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
    "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\nYou are terse.<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nHow are you?<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n",
    "qwen2": "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
    "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nHow are you?<|im_end|>\n"
    "<|im_start|>assistant\n",
    # Gemma refuses a system message: the caller folds it into the first user turn.
    "gemma": "<bos><start_of_turn>user\nYou are terse.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n"
    "<start_of_turn>user\nHow are you?<end_of_turn>\n<start_of_turn>model\n",
    # Gemma 3's template puts the system text at the start of the first user turn itself.
    "gemma3": "<bos><start_of_turn>user\nYou are terse.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n"
    "<start_of_turn>user\nHow are you?<end_of_turn>\n<start_of_turn>model\n",
}
INSTRUCT_FAMILIES = sorted(EXPECTED_PROMPTS)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("foreign")
    written = {family: write_foreign_gguf(folder / f"{family}.gguf", family) for family in FAMILIES}
    written |= {kind: write_broken_gguf(folder / f"broken-{kind}.gguf", kind) for kind in BROKEN_KINDS}
    return written


@pytest.fixture(scope="module")
def loaded(files):
    """family -> llama_cpp.Llama on its file, loaded once."""
    import llama_cpp

    models = {
        family: llama_cpp.Llama(model_path=str(files[family]), n_ctx=512, n_threads=2, logits_all=True, verbose=False)
        for family in FAMILIES
    }
    yield models
    for llm in models.values():
        llm.close()


def render(template: str, messages: list[dict], family) -> str:
    """The template rendered the way transformers and llama-cpp-python do."""
    from jinja2.exceptions import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise TemplateError(message)

    environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    environment.globals["raise_exception"] = raise_exception
    return environment.from_string(template).render(
        messages=messages, bos_token=family.bos, eos_token=family.eos, add_generation_prompt=True
    )


# --- good files -------------------------------------------------------------


@pytest.mark.parametrize("family", list(FAMILIES))
def test_foreign_file_passes_the_check(files, family):
    spec = FAMILIES[family]
    info = check_gguf(files[family])
    assert info.architecture == spec.architecture
    assert info.tokenizer_model == spec.tokenizer_model
    assert info.chat_template == spec.chat_template
    assert info.file_type_name == "F16"
    assert info.context_length == 512
    assert info.vocab_size == spec.vocab_size
    assert not info.chatapp


@pytest.mark.parametrize("family", list(FAMILIES))
def test_tensor_names_are_those_of_the_architecture(files, family):
    architecture = next(arch for arch, name in gguf.MODEL_ARCH_NAMES.items() if name == FAMILIES[family].architecture)
    known = {gguf.TENSOR_NAMES[tensor] for tensor in gguf.MODEL_TENSORS[architecture]}
    for tensor in read_gguf(files[family]).tensors:
        base = tensor.name.rsplit(".", 1)[0]  # drop .weight / .bias
        if base.startswith("blk."):
            base = "blk.{bid}." + base.split(".", 2)[2]
        assert base in known, f"{tensor.name} is not a {FAMILIES[family].architecture} tensor"


def test_special_tokens_are_control_tokens(files):
    for family, spec in FAMILIES.items():
        reader = read_gguf(files[family])
        tokens = reader.fields["tokenizer.ggml.tokens"].contents()
        types = reader.fields["tokenizer.ggml.token_type"].contents()
        for token in spec.special_tokens:
            expected = gguf.TokenType.UNKNOWN if token == "<unk>" else gguf.TokenType.CONTROL
            assert types[tokens.index(token)] == expected, (family, token)
        assert tokens[spec.end_of_turn_id] == spec.end_of_turn


@pytest.mark.parametrize("family", list(FAMILIES))
def test_llama_cpp_tokenizes_and_evaluates(loaded, family):
    llm = loaded[family]
    ids = llm.tokenize(TEXT_OUTSIDE_VOCAB.encode(), add_bos=False, special=False)
    assert llm.detokenize(ids).decode() == TEXT_OUTSIDE_VOCAB
    llm.reset()
    llm.eval(ids[:8])
    logits = np.asarray(llm.scores[:8])
    assert logits.shape == (8, FAMILIES[family].vocab_size)
    assert np.isfinite(logits).all() and logits.std() > 0


@pytest.mark.parametrize("family", list(FAMILIES))
def test_llama_cpp_sees_the_special_tokens(loaded, family):
    import llama_cpp

    spec = FAMILIES[family]
    llm = loaded[family]
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    assert llama_cpp.llama_vocab_bos(vocab) == spec.bos_id
    assert llama_cpp.llama_vocab_eos(vocab) == spec.eos_id
    marker = spec.end_of_turn.encode()
    assert llm.tokenize(marker, add_bos=False, special=True) == [spec.end_of_turn_id]
    assert llama_cpp.llama_vocab_is_eog(vocab, spec.end_of_turn_id)
    # typed as plain text, the marker is ordinary tokens, not the control token
    assert spec.end_of_turn_id not in llm.tokenize(marker, add_bos=False, special=False)
    assert not llama_cpp.llama_vocab_is_eog(vocab, llm.tokenize(b"Hello", add_bos=False, special=False)[0])


@pytest.mark.parametrize("family", INSTRUCT_FAMILIES)
def test_chat_template_renders_a_conversation(files, loaded, family):
    spec = FAMILIES[family]
    template = check_gguf(files[family]).chat_template
    messages = CONVERSATION
    if family == "gemma":
        from jinja2.exceptions import TemplateError

        with pytest.raises(TemplateError, match="System role not supported"):
            render(template, CONVERSATION, spec)
        system, first, *rest = CONVERSATION
        messages = [{"role": "user", "content": system["content"] + "\n\n" + first["content"]}, *rest]
    prompt = render(template, messages, spec)
    assert prompt == EXPECTED_PROMPTS[family]
    ids = loaded[family].tokenize(prompt.encode(), add_bos=False, special=True)
    # Gemma 3's template writes the system text inside the first user turn
    closed_turns = sum(1 for message in messages if family != "gemma3" or message["role"] != "system")
    assert ids.count(spec.end_of_turn_id) == closed_turns


def test_plain_model_has_no_template(files):
    assert check_gguf(files["plain"]).chat_template is None
    assert "tokenizer.chat_template" not in read_gguf(files["plain"]).fields


def test_unknown_override_is_refused(tmp_path):
    with pytest.raises(TypeError):
        write_foreign_gguf(tmp_path / "x.gguf", "llama3", no_such_option=1)
    with pytest.raises(ValueError, match="unknown family"):
        write_foreign_gguf(tmp_path / "x.gguf", "no-such-family")


def test_file_type_names():
    assert file_type_name(0) == "F32"
    assert file_type_name(1) == "F16"
    assert file_type_name(7) == "Q8_0"
    assert file_type_name(15) == "Q4_K_M"
    assert file_type_name(None) is None
    assert file_type_name(9999) is None


def test_file_type_name_comes_from_the_file(tmp_path):
    path = write_foreign_gguf(tmp_path / "q4.gguf", "qwen2", file_type=int(gguf.LlamaFileType.MOSTLY_Q4_K_M))
    assert check_gguf(path).file_type_name == "Q4_K_M"


# --- broken files -----------------------------------------------------------

EXPECTED_REASONS = {
    "nan_epsilon": "layer_norm_rms_epsilon is nan",
    "negative_epsilon": "layer_norm_rms_epsilon is -1e-06",
    "spm_without_bytes": "lacks 256 of the 256 byte tokens",
    "zero_sized_tensor": "has a zero-sized dimension",
}


@pytest.mark.parametrize("kind", list(BROKEN_KINDS))
def test_broken_file_reads_as_gguf(files, kind):
    reader = read_gguf(files[kind])  # the plain gguf read (magic, header, truncation) finds nothing
    assert reader.tensors


@pytest.mark.parametrize("kind", list(BROKEN_KINDS))
def test_check_refuses_broken_file(files, kind):
    with pytest.raises(GGUFFileError) as error:
        check_gguf(files[kind])
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"{files[kind]}: ")
    assert EXPECTED_REASONS[kind] in message


@pytest.mark.parametrize(
    "overrides, reason",
    [
        ({"layer_norm_epsilon": 0.0}, "is 0: a norm epsilon"),
        ({"layer_norm_epsilon": float("inf")}, "is inf: a norm epsilon"),
        ({"zero_sized_tensor": "blk.1.ffn_norm.weight"}, "tensor blk.1.ffn_norm.weight has a zero-sized dimension"),
    ],
)
def test_check_refuses_other_bad_values(tmp_path, overrides, reason):
    path = write_foreign_gguf(tmp_path / "bad.gguf", "llama3", **overrides)
    with pytest.raises(GGUFFileError, match=reason):
        check_gguf(path)


def test_check_refuses_a_spm_vocabulary_missing_one_byte_token(tmp_path, monkeypatch):
    from tests.helpers import foreign_gguf

    vocabulary = foreign_gguf.sentencepiece_vocabulary()
    vocabulary.tokens[vocabulary.id_of("<0xE2>")] = "<0xE2-renamed>"
    monkeypatch.setattr(foreign_gguf, "sentencepiece_vocabulary", lambda with_byte_tokens=True: vocabulary)
    path = write_foreign_gguf(tmp_path / "one-missing.gguf", "gemma")
    with pytest.raises(GGUFFileError, match=r"lacks 1 of the 256 byte tokens \(e.g. <0xE2>\)"):
        check_gguf(path)


# What a program does with a model it has not checked: load, tokenize text
# with characters outside the vocabulary, evaluate. It prints each step it
# survives, so the test can tell where llama.cpp died.
UNCHECKED_USE = textwrap.dedent("""
    import sys
    import llama_cpp
    llm = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=512, n_threads=2, verbose=False)
    print("loaded", flush=True)
    ids = llm.tokenize(sys.argv[2].encode(), add_bos=True, special=False)
    print("tokenized", flush=True)
    llm.eval(ids[:8])
    print("evaluated", flush=True)
""")
# kind -> (the last step that completes, what llama.cpp writes to stderr).
# With verbose=False, llama-cpp-python points stderr at /dev/null while it
# loads, so an abort during the load leaves no message at all.
HOW_LLAMA_CPP_DIES = {
    "nan_epsilon": ("tokenized", "GGML_ASSERT(eps >= 0.0f) failed"),
    "negative_epsilon": ("tokenized", "GGML_ASSERT(eps >= 0.0f) failed"),
    "spm_without_bytes": ("loaded", "terminate called after throwing an instance of 'std::out_of_range'"),
    "zero_sized_tensor": (None, ""),
}


def run_unchecked(path) -> subprocess.CompletedProcess:
    # GGML_NO_BACKTRACE: where gdb is installed, ggml attaches it to print a
    # backtrace before aborting, and when two threads fail the same assert at
    # once the process can hang instead of dying.
    environment = os.environ | {"GGML_NO_BACKTRACE": "1"}
    return subprocess.run(
        [sys.executable, "-c", UNCHECKED_USE, str(path), TEXT_OUTSIDE_VOCAB],
        capture_output=True,
        text=True,
        timeout=120,
        env=environment,
    )


@pytest.mark.parametrize("kind", list(BROKEN_KINDS))
def test_without_the_check_llama_cpp_aborts(files, kind):
    last_step, message = HOW_LLAMA_CPP_DIES[kind]
    result = run_unchecked(files[kind])
    assert result.returncode == -signal.SIGABRT, result.stderr[-2000:]
    assert message in result.stderr
    steps = result.stdout.split()
    assert (steps[-1] if steps else None) == last_step


def test_the_unchecked_use_runs_on_a_good_file(files):
    result = run_unchecked(files["gemma"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["loaded", "tokenized", "evaluated"]
