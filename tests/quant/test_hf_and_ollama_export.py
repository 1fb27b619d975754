"""Our models in the Hugging Face format (transformers loads them with no custom
code) and for Ollama (a Modelfile whose Go template is our chat format)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from model.text.chat_format import Message, jinja_chat_template, render_ids
from tests.helpers.gguf_exports import BUILTIN_MODEL
from tests.helpers.go_template import render as render_go
from tests.helpers.paths import ROOT
from tests.helpers.tricky_text import LOOKALIKES, sample_strings

CHAT_MODEL = ROOT / "chatapp" / "builtin" / "shakespeare-chat"
PROMPTS = ["Good morrow, my lord", "To be, or not to be", "O Romeo, Romeo", "Now is the winter of our discontent", "\n"]
CONVERSATIONS = [
    [Message("user", "Good morrow")],
    [
        Message("system", "You are Hamlet, Prince of Denmark."),
        Message("user", "To be?"),
        Message("assistant", "Or not to be."),
        Message("user", "  spaces \n\n and newlines\t"),
    ],
    [Message("user", "emoji 🎭 and CJK 漢字, quotes ' \" {{ braces }}"), Message("assistant", ""), Message("user", "")],
]


@pytest.fixture(scope="module", params=["tiny", "shipped base", "shipped chat"])
def exported_pair(request, tiny_model_dir, tmp_path_factory):
    """(our model folder, its Hugging Face export)."""
    from quant.hf_export import export_hf

    folder = {"tiny": tiny_model_dir, "shipped base": BUILTIN_MODEL, "shipped chat": CHAT_MODEL}[request.param]
    return folder, export_hf(folder, tmp_path_factory.mktemp("hf") / "model")


def test_transformers_loads_it_and_its_logits_equal_ours(exported_pair):
    from transformers import AutoModelForCausalLM

    from model.network.model_folder import load_model, load_tokenizer

    folder, hf_dir = exported_pair
    ours, _, _ = load_model(folder, device="cpu", dtype=torch.float32)
    theirs = AutoModelForCausalLM.from_pretrained(hf_dir).eval()
    assert type(theirs).__name__ == "GPT2LMHeadModel"
    tokenizer = load_tokenizer(folder)
    for prompt in PROMPTS:
        ids = torch.tensor([[tokenizer.end_of_text_id] + tokenizer.encode(prompt)])
        with torch.no_grad():
            expected = ours(ids)[0][0]
            got = theirs(ids).logits[0]
        assert (
            (got[-1] - expected[-1]).abs().max() <= 1e-4
            if expected.dim() == 1
            else (got[-expected.shape[0] :] - expected).abs().max() <= 1e-4
        )


@pytest.mark.slow
def test_greedy_pipeline_text_equals_chatapp_run_raw(exported_pair):
    from transformers import pipeline

    folder, hf_dir = exported_pair
    generate = pipeline("text-generation", model=str(hf_dir))
    for prompt in PROMPTS[:3]:
        theirs = generate(prompt, max_new_tokens=16, do_sample=False, return_full_text=False)[0]["generated_text"]
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "chatapp",
                "run",
                "--model",
                str(folder),
                "--raw",
                "--temperature",
                "0",
                "--max-tokens",
                "16",
                prompt,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0, run.stderr
        assert run.stdout[:-1] == theirs  # `run` ends the reply with a newline


def test_autotokenizer_ids_equal_ours_on_thousands_of_strings(exported_pair):
    from transformers import AutoTokenizer

    from model.network.model_folder import load_tokenizer

    folder, hf_dir = exported_pair
    theirs = AutoTokenizer.from_pretrained(hf_dir)
    ours = load_tokenizer(folder)
    strings = sample_strings() + ["<|end|>", "<|user|>hi<|end|><|assistant|>", "<|endoftext|>", "<|im_end|>"]
    assert len(strings) >= 5000
    mismatched = [
        s
        for s in strings
        if theirs(s, add_special_tokens=False, split_special_tokens=True)["input_ids"] != ours.encode(s)
    ]
    assert mismatched == []
    assert theirs("Good morrow")["input_ids"] == [ours.end_of_text_id] + ours.encode(
        "Good morrow"
    )  # as `run --raw` starts
    for text in LOOKALIKES[:50]:
        assert theirs.decode(ours.encode(text)) == ours.decode(ours.encode(text))


def test_the_chat_template_gives_our_chat_format(exported_pair):
    from transformers import AutoTokenizer

    from model.network.model_folder import load_tokenizer

    folder, hf_dir = exported_pair
    theirs, ours = AutoTokenizer.from_pretrained(hf_dir), load_tokenizer(folder)
    for messages in CONVERSATIONS:
        dicts = [{"role": m.role, "content": m.content} for m in messages]
        ids = theirs.apply_chat_template(dicts, add_generation_prompt=True, tokenize=True)
        ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
        assert list(ids) == render_ids(messages, ours)


def test_the_folder_is_complete_and_says_what_the_model_is(exported_pair):
    folder, hf_dir = exported_pair
    names = {p.name for p in hf_dir.iterdir()}
    assert {
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "vocab.json",
        "merges.txt",
        "README.md",
    } <= names
    card = (hf_dir / "README.md").read_text()
    config = json.loads((folder / "config.json").read_text())
    assert config["name"] in card and "License" in card and "## Training" in card
    if "validation" in config.get("training", {}):
        assert "## Held-out figures" in card
    generation = json.loads((hf_dir / "generation_config.json").read_text())
    assert len(generation["eos_token_id"]) == 2


def test_an_export_never_overwrites_what_it_did_not_write(tiny_model_dir, tmp_path):
    from quant.hf_export import HFExportError, export_hf

    with pytest.raises(HFExportError, match="inside the model folder"):
        export_hf(tiny_model_dir, tiny_model_dir / "hf")
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(HFExportError, match="not an earlier chatapp export"):
        export_hf(tiny_model_dir, precious)
    assert (precious / "notes.txt").read_text() == "keep me"
    again = export_hf(tiny_model_dir, export_hf(tiny_model_dir, tmp_path / "hf"))  # a previous export is replaced
    assert sorted(p.name for p in again.parent.iterdir() if p.name.startswith(".")) == []  # no staging left behind


def test_writing_it_needs_no_torch(tiny_model_dir, tmp_path):
    script = (
        "import sys\nfrom quant.hf_export import export_hf\n"
        f"export_hf({str(tiny_model_dir)!r}, {str(tmp_path / 'hf')!r})\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\nprint('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def test_the_ollama_template_renders_our_chat_format():
    import jinja2

    from quant.ollama_export import go_template, modelfile

    ours = jinja2.Environment().from_string(jinja_chat_template())
    conversations = CONVERSATIONS + [
        [Message(role, f"{role} says {i}") for i, role in enumerate(roles)]
        for roles in (
            ["system", "user"],
            ["user", "assistant", "user"],
            ["system"] + ["user", "assistant"] * 5 + ["user"],
        )
    ]
    for messages in conversations:
        dicts = [{"Role": m.role, "Content": m.content} for m in messages]
        expected = ours.render(
            messages=[{"role": m.role, "content": m.content} for m in messages], add_generation_prompt=True
        )
        assert render_go(go_template(), Messages=dicts) == expected
    text = modelfile("model.gguf", 256)
    assert (
        text.startswith("FROM ./model.gguf\n")
        and 'PARAMETER stop "<|end|>"' in text
        and "PARAMETER num_ctx 256" in text
    )


@pytest.mark.slow
def test_chatapp_takes_the_exported_folder_back(exported_pair):
    from model.network.model_folder import load_model

    folder, hf_dir = exported_pair
    ours, _, _ = load_model(folder, dtype=torch.float32)
    back, tokenizer, config = load_model(hf_dir, dtype=torch.float32)
    assert config["architecture"]["n_layer"] == ours.config.n_layer
    ids = torch.tensor([[tokenizer.end_of_text_id] + tokenizer.encode("Once more unto the breach")])
    with torch.no_grad():
        assert torch.equal(back(ids)[0], ours(ids)[0])
    run = [sys.executable, "-m", "chatapp", "run", "--raw", "--temperature", "0", "--max-tokens", "8", "Once more"]
    original = subprocess.run(run + ["--model", str(folder)], capture_output=True, text=True, timeout=120)
    again = subprocess.run(run + ["--model", str(hf_dir)], capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and again.stdout == original.stdout, again.stderr


@pytest.mark.slow
def test_chatapp_export_writes_each_format(tiny_model_dir, tmp_path):
    from quant.gguf_check import check_gguf

    def export(*args):
        result = subprocess.run(
            [sys.executable, "-m", "chatapp", "export", str(tiny_model_dir), *args],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    said = export("--format", "ollama", "--type", "q8_0", "-o", str(tmp_path / "ollama"))
    modelfile = (tmp_path / "ollama" / "Modelfile").read_text()
    gguf_name = modelfile.splitlines()[0].removeprefix("FROM ./")
    assert check_gguf(tmp_path / "ollama" / gguf_name).chatapp and "ollama create" in said
    export("--format", "hf", "-o", str(tmp_path / "hf"))
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["architectures"] == ["GPT2LMHeadModel"]
