"""A model folder as a Hugging Face transformers folder: GPT2LMHeadModel, no custom code.

What transformers, vLLM, TGI and llama.cpp's own converter take. Written with
numpy and safetensors alone (no torch), into a temporary folder that replaces
the target only when complete:

    config.json               GPT2Config: our width, depth, heads, context; GELU (tanh) as ours; tied head
    generation_config.json    stop on <|end|> and <|endoftext|>; our default temperature and top-p
    model.safetensors         HF's names; its Conv1D layers store (in, out), our nn.Linear (out, in)
    tokenizer.json            our BPE as a byte-level BPE for the `tokenizers` library (fast tokenizer)
    vocab.json, merges.txt    the same for the slow GPT2Tokenizer
    tokenizer_config.json     the special tokens, and our chat format as `chat_template`
    README.md                 a model card

The merges are rebuilt from our tiktoken ranks exactly as for GGUF
(quant/gguf_vocab.py), so HF's BPE splits text as tiktoken does. The chat
format's markers are added tokens: as in every HF chat model, text passed
through `apply_chat_template` can contain them; `tokenizer(text,
split_special_tokens=True)` keeps typed markers plain.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from model.inference.sampling import SamplingParams
from model.network.hf_folder import gpt2_config, hf_tensor_names
from model.network.model_folder import CONFIG_FILE, WEIGHTS_FILE, load_tokenizer, read_config
from model.text.byte_level import token_string
from model.text.chat_format import jinja_chat_template
from model.text.tokenizer import END_OF_TEXT, END_OF_TURN, SPECIAL_TOKENS
from quant.export_target import check_target, sweep_stale_temporaries, temporary_prefix
from quant.gguf_layout import ExportError
from quant.gguf_vocab import merges_from_ranks
from quant.weights import SafetensorsFile

EXPORT_MARKER = "chatapp_export"  # a key in config.json: a folder with it may be replaced by a new export


class HFExportError(ValueError):
    """The export cannot be made; a one-line message."""


def hf_config(config: dict, special_ids: dict[str, int]) -> dict:
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        **gpt2_config(config["architecture"], special_ids[END_OF_TEXT], special_ids[END_OF_TEXT]),
        "n_ctx": config["architecture"]["context_length"],
        "torch_dtype": "float32",
        EXPORT_MARKER: {"name": config.get("name", ""), "chat_format_version": config.get("chat_format_version")},
    }


def generation_config(special_ids: dict[str, int]) -> dict:
    defaults = SamplingParams()
    return {
        "bos_token_id": special_ids[END_OF_TEXT],
        "eos_token_id": [special_ids[END_OF_TURN], special_ids[END_OF_TEXT]],
        "pad_token_id": special_ids[END_OF_TEXT],
        "do_sample": True,
        "temperature": defaults.temperature,
        "top_p": defaults.top_p,
    }


def tokenizer_files(tokenizer, context_length: int) -> dict[str, str]:
    """tokenizer.json, vocab.json, merges.txt, tokenizer_config.json and special_tokens_map.json."""
    vocab = {token_string(token): rank for token, rank in tokenizer.ranks.items()}
    merges = merges_from_ranks(tokenizer.ranks)
    added = [
        {
            "id": tokenizer.special_ids[text],
            "content": text,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }
        for text in SPECIAL_TOKENS
    ]
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    start = tokenizer.special_ids[END_OF_TEXT]
    # plain text starts after <|endoftext|>, as in training (chat templates are tokenized without it)
    after_start = {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": END_OF_TEXT, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [
            {"SpecialToken": {"id": END_OF_TEXT, "type_id": 0}},
            {"Sequence": {"id": "A", "type_id": 0}},
            {"Sequence": {"id": "B", "type_id": 1}},
        ],
        "special_tokens": {END_OF_TEXT: {"id": END_OF_TEXT, "ids": [start], "tokens": [END_OF_TEXT]}},
    }
    fast = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": byte_level,
        "post_processor": after_start,
        "decoder": byte_level,
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": "",
            "end_of_word_suffix": "",
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": vocab,
            "merges": merges,
        },
    }
    special_map = {
        "bos_token": END_OF_TEXT,
        "eos_token": END_OF_TURN,
        "unk_token": END_OF_TEXT,
        "pad_token": END_OF_TEXT,
        "additional_special_tokens": [t for t in SPECIAL_TOKENS if t not in (END_OF_TEXT, END_OF_TURN)],
    }
    config = {
        "tokenizer_class": "GPT2Tokenizer",
        "model_max_length": context_length,
        "add_bos_token": True,
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "errors": "replace",
        "added_tokens_decoder": {str(a["id"]): {k: v for k, v in a.items() if k != "id"} for a in added},
        "chat_template": jinja_chat_template(),
        **special_map,
    }
    return {
        "tokenizer.json": json.dumps(fast, ensure_ascii=False),
        "vocab.json": json.dumps(vocab, ensure_ascii=False),
        "merges.txt": "#version: 0.2\n" + "\n".join(merges) + "\n",
        "tokenizer_config.json": json.dumps(config, ensure_ascii=False, indent=2),
        "special_tokens_map.json": json.dumps(special_map, indent=2),
    }


TRAINING_FACTS = (
    "base",
    "method",
    "preset",
    "data",
    "parameters",
    "steps",
    "tokens_per_step",
    "train_tokens",
    "batch_size",
    "learning_rate",
    "seed",
    "device",
)


def _plain(value) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{key.replace('_', ' ')} {_plain(item)}" for key, item in value.items())
    return f"{value:,}" if isinstance(value, int) and value >= 10_000 else str(value)


def model_card(config: dict) -> str:
    arch, training = config["architecture"], config.get("training", {})
    name = config.get("name", "model")
    validation = training.get("validation") or {}
    held_out = training.get("validation_text") or (validation if "nats_per_token" in validation else {})
    replies = validation if "loss" in validation else {}
    lines = [
        "---",
        f"license: {'mit' if 'MIT' in str(config.get('license', '')) else 'other'}",
        "library_name: transformers",
        "pipeline_tag: text-generation",
        "tags: [gpt2, chatapp]",
        "---",
        "",
        f"# {name}",
        "",
        config.get("description") or "A GPT trained from scratch with chatapp.",
        "",
        "## Model",
        "",
        f"GPT-2 architecture: {arch['n_layer']} layers, width {arch['n_embd']}, {arch['n_head']} heads, "
        f"context {arch['context_length']} tokens, vocabulary {arch['vocab_size']:,} (chatapp's byte-level BPE), "
        f"{training.get('parameters', 0):,} parameters.",
        "",
        "## Training",
        "",
        *[f"- {key.replace('_', ' ')}: {_plain(training[key])}" for key in TRAINING_FACTS if key in training],
        "",
    ]
    if held_out or replies:
        lines += ["## Held-out figures", ""]
        if held_out:
            lines.append(
                f"- text ({held_out.get('tokens', 0):,} tokens held out): {held_out['nats_per_token']:.4f} nats/token, "
                f"{held_out['nats_per_char']:.4f} nats/char, perplexity {held_out['perplexity']:.2f}"
            )
        if replies:
            lines.append(
                f"- chat replies ({replies.get('examples', 0):,} held-out conversations): "
                f"{replies['loss']:.4f} nats/token"
            )
        lines.append("")
    lines += [
        "## Use",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        f'tokenizer = AutoTokenizer.from_pretrained("{name}")',
        f'model = AutoModelForCausalLM.from_pretrained("{name}")',
        'ids = tokenizer.apply_chat_template([{"role": "user", "content": "Good morrow"}], add_generation_prompt=True, '
        'return_tensors="pt")',
        "print(tokenizer.decode(model.generate(ids, max_new_tokens=40)[0][ids.shape[1]:], skip_special_tokens=True))",
        "```",
        "",
        f"License: {config.get('license') or 'see the source'}.",
        "",
    ]
    return "\n".join(lines)


def _weights(folder: Path, arch: dict) -> dict[str, np.ndarray]:
    weights = SafetensorsFile(folder / WEIGHTS_FILE)
    missing = [ours for _, ours, _ in hf_tensor_names(arch["n_layer"]) if ours not in weights.entries]
    if missing:
        raise HFExportError(f"{folder / WEIGHTS_FILE}: tensors missing for this config ({', '.join(missing[:3])})")
    tensors = {}
    for theirs, ours, transposed in hf_tensor_names(arch["n_layer"]):
        values = weights.float32(ours)
        tensors[theirs] = np.ascontiguousarray(values.T if transposed else values)
    weights.close()
    return tensors


def is_hf_export(out: Path) -> bool:
    """An empty folder, or one an earlier export wrote (its config.json has EXPORT_MARKER)."""
    if not out.is_dir():
        return False
    previous = out / CONFIG_FILE
    ours = previous.is_file() and EXPORT_MARKER in previous.read_text(encoding="utf-8", errors="replace")
    return ours or not any(out.iterdir())


def export_hf(model_folder: str | Path, out_dir: str | Path, force: bool = False) -> Path:
    """Write the Hugging Face folder; the target is replaced only once the new one is complete."""
    from safetensors.numpy import save_file

    folder, out = Path(model_folder), Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise HFExportError(f"{out}: exists and is not a folder")
    try:
        check_target(folder, out, force, is_hf_export)
    except ExportError as error:
        raise HFExportError(str(error)) from None
    config = read_config(folder)
    tokenizer = load_tokenizer(folder)
    arch = config["architecture"]
    out.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_temporaries(out)  # staging folders of exports killed before they could clean up
    staging = Path(tempfile.mkdtemp(prefix=temporary_prefix(out), suffix=".tmp", dir=out.parent))
    try:
        save_file(_weights(folder, arch), str(staging / "model.safetensors"), metadata={"format": "pt"})
        files = {
            "config.json": json.dumps(hf_config(config, tokenizer.special_ids), indent=2),
            "generation_config.json": json.dumps(generation_config(tokenizer.special_ids), indent=2),
            "README.md": model_card(config),
            **tokenizer_files(tokenizer, arch["context_length"]),
        }
        for name, text in files.items():
            (staging / name).write_text(text, encoding="utf-8")
        umask = os.umask(0)
        os.umask(umask)
        staging.chmod(0o777 & ~umask)
        for path in staging.iterdir():
            path.chmod(0o666 & ~umask)
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
            os.replace(staging, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out
