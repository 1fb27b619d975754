"""`chatapp export`: every type round-trips, the metadata is complete, the
fallback report is right, and a failed export never leaves a half file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from quant.gguf_export import export_model
from quant.gguf_layout import EXPORT_TYPES, ExportError
from tests.helpers.gguf_exports import exported
from tests.helpers.paths import ROOT


@pytest.fixture(scope="module")
def tiny_config(tiny_model_dir) -> dict:
    return json.loads((tiny_model_dir / "config.json").read_text())


@pytest.mark.parametrize("kind", EXPORT_TYPES)
def test_every_type_exports_loads_and_generates(quant_model_dir, kind):
    from model.inference.sampling import SamplingParams
    from quant.llama_engine import LlamaEngine

    path, report = exported(quant_model_dir, kind)  # export_model checks the file before publishing it
    types = report.tensor_types
    assert types["position_embd.weight"] == "F32" and types["output_norm.weight"] == "F32"
    matrices = {
        n: t for n, t in types.items() if n.endswith(".weight") and "norm" not in n and n != "position_embd.weight"
    }
    wanted = {
        "f32": "F32",
        "f16": "F16",
        "bf16": "BF16",
        "q8_0": "Q8_0",
        "q4_0": "Q4_0",
        "q4_1": "Q4_1",
        "q5_0": "Q5_0",
        "q5_1": "Q5_1",
        "q4_k_m": "Q4_K",
        "q5_k_m": "Q5_K",
        "q6_k": "Q6_K",
    }[kind]
    assert wanted in matrices.values(), matrices
    odd = {n for n, t in matrices.items() if t != wanted}
    assert odd == {t.name for t in report.fallbacks + report.kept} - {"position_embd.weight"}
    backend = LlamaEngine.load(path)
    try:
        prompt = [backend.tokenizer.end_of_text_id] + backend.tokenizer.encode("Good morrow, my lord")
        events = list(backend.generate_ids(prompt, SamplingParams(temperature=0, max_tokens=8, seed=1), stop_ids=set()))
        assert events[-1].completion_tokens == 8 and events[-1].reason == "length"
        assert "".join(e.text for e in events[:-1])
    finally:
        backend.close()


def test_fallback_report_names_the_tensors_and_why(tiny_model_dir):
    # the tiny model is 64 wide: no matrix row is a multiple of the K-quants' 256
    path, report = exported(tiny_model_dir, "q4_k_m")
    assert report.fallbacks, report.lines()
    assert all("not a multiple of 256" in t.reason and t.type != "Q4_K" for t in report.fallbacks)
    assert {t.name for t in report.fallbacks} >= {"blk.0.attn_qkv.weight", "blk.1.ffn_up.weight"}
    assert report.llama_fallback_count and report.llama_fallback_count >= 1
    text = "\n".join(report.lines())
    assert "fell back" in text and "blk.0.attn_qkv.weight" in text and "position_embd.weight" in text
    _, q8 = exported(tiny_model_dir, "q8_0")  # 64 is a multiple of Q8_0's 32
    assert not q8.fallbacks and q8.llama_fallback_count == 0


def test_no_fallbacks_at_width_256(tmp_path, tiny_model_dir):
    """A 256-wide model keeps every matrix in the asked K-quant (the shipped model's shape)."""
    from quant.gguf_check import tensor_types

    folder = widened_model(tiny_model_dir, tmp_path / "wide", width=256)
    report = export_model(folder, tmp_path / "wide.gguf", "q6_k")
    assert not report.fallbacks, report.lines()
    assert tensor_types(tmp_path / "wide.gguf")["blk.0.attn_qkv.weight"] == "Q6_K"


def widened_model(tiny_model_dir: Path, out: Path, width: int) -> Path:
    """A copy of the tiny model's folder with random weights of another width (numpy only)."""
    from safetensors.numpy import save_file

    from model.network.safetensors_header import gpt_shapes

    config = json.loads((tiny_model_dir / "config.json").read_text())
    config["architecture"]["n_embd"] = width
    out.mkdir(parents=True)
    rng = np.random.default_rng(0)
    weights = {
        name: (rng.standard_normal(shape) * 0.02).astype(np.float16)
        for name, shape in gpt_shapes(config["architecture"]).items()
    }
    save_file(weights, str(out / "model.safetensors"))
    (out / "config.json").write_text(json.dumps(config))
    (out / "tokenizer.tiktoken").write_bytes((tiny_model_dir / "tokenizer.tiktoken").read_bytes())
    return out


def test_metadata(tiny_model_dir, tiny_config):
    from model.text.chat_format import jinja_chat_template
    from quant.gguf_check import field_value, read_gguf

    path, _ = exported(tiny_model_dir, "q8_0")
    reader = read_gguf(path)
    arch = tiny_config["architecture"]
    value = lambda key: field_value(reader, key)  # noqa: E731
    assert value("general.architecture") == "gpt2"
    assert value("general.name") == tiny_config["name"]
    assert value("general.description") and value("general.license") == tiny_config["license"]
    assert value("general.file_type") == 7
    assert value("gpt2.context_length") == arch["context_length"]
    assert value("gpt2.embedding_length") == arch["n_embd"]
    assert value("gpt2.feed_forward_length") == 4 * arch["n_embd"]
    assert value("gpt2.block_count") == arch["n_layer"]
    assert value("gpt2.attention.head_count") == arch["n_head"]
    assert value("gpt2.attention.layer_norm_epsilon") == pytest.approx(arch["layer_norm_epsilon"])
    assert value("tokenizer.ggml.model") == "gpt2" and value("tokenizer.ggml.pre") == "gpt-2"
    assert value("tokenizer.chat_template") == jinja_chat_template()
    assert value("tokenizer.ggml.add_bos_token") is False
    assert value("chatapp.chat_format_version") == tiny_config["chat_format_version"]
    stored = json.loads(value("chatapp.config"))
    assert stored["training"] == tiny_config["training"] and stored["architecture"] == arch


def test_folder_weights_in_fp16_and_bf16_export_exactly(tmp_path, tiny_model_dir):
    import torch
    from safetensors.torch import load_file, save_file

    from quant.gguf_check import read_gguf

    state = load_file(str(tiny_model_dir / "model.safetensors"))
    for dtype in (torch.float16, torch.bfloat16):
        folder = tmp_path / str(dtype).split(".")[-1]
        folder.mkdir()
        for name in ("config.json", "tokenizer.tiktoken"):
            (folder / name).write_bytes((tiny_model_dir / name).read_bytes())
        save_file({k: v.to(dtype) for k, v in state.items()}, str(folder / "model.safetensors"))
        out = tmp_path / f"{folder.name}.gguf"
        export_model(folder, out, "f32")
        tensors = {t.name: t for t in read_gguf(out).tensors}
        expected = state["blocks.1.attn.qkv.weight"].to(dtype).float().numpy()
        assert np.array_equal(np.asarray(tensors["blk.1.attn_qkv.weight"].data), expected)


def test_progress_is_reported(tmp_path, tiny_model_dir):
    seen = []
    export_model(
        tiny_model_dir,
        tmp_path / "m.gguf",
        "q5_0",
        progress=lambda stage, done, total: seen.append((stage, done, total)),
    )
    stages = {s for s, _, _ in seen}
    assert {"writing", "quantizing"} <= stages
    last = [entry for entry in seen if entry[0] == "quantizing"][-1]
    assert last[1] == last[2]


def test_failed_export_leaves_no_file_and_keeps_the_old_one(tmp_path, tiny_model_dir, monkeypatch):
    import quant.gguf_export

    target = tmp_path / "out" / "m.gguf"
    target.parent.mkdir()
    target.write_bytes(b"the previous export")

    def broken(*args, **kwargs):
        raise RuntimeError("disk full, say")

    monkeypatch.setattr(quant.gguf_export, "quantize_file", broken)
    with pytest.raises(RuntimeError):
        export_model(tiny_model_dir, target, "q4_0", force=True)  # force: the stand-in is not a chatapp GGUF
    assert target.read_bytes() == b"the previous export"
    assert sorted(p.name for p in target.parent.iterdir()) == ["m.gguf"]

    def interrupt(stage, done, total):
        if done == 3:
            raise KeyboardInterrupt

    fresh = tmp_path / "out" / "fresh.gguf"
    with pytest.raises(KeyboardInterrupt):
        export_model(tiny_model_dir, fresh, "f16", progress=interrupt)
    assert sorted(p.name for p in target.parent.iterdir()) == ["m.gguf"]


def test_bad_requests_give_one_line_errors(tmp_path, tiny_model_dir):
    from quant.weights import WeightsError

    with pytest.raises(ExportError, match="--type must be one of"):
        export_model(tiny_model_dir, tmp_path / "m.gguf", "q3_k")
    with pytest.raises(ExportError, match="missing"):
        export_model(tmp_path / "nowhere", tmp_path / "m.gguf", "f16")
    with pytest.raises(ExportError, match="is a folder"):
        export_model(tiny_model_dir, tmp_path, "f16")
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "tokenizer.tiktoken"):
        (broken / name).write_bytes((tiny_model_dir / name).read_bytes())
    weights = (tiny_model_dir / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    with pytest.raises(WeightsError, match="truncated") as caught:
        export_model(broken, tmp_path / "m.gguf", "f16")
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "m.gguf").exists()


def test_export_and_llama_backend_never_import_torch(tmp_path, tiny_model_dir):
    script = f"""
import sys
from quant.gguf_export import export_model
from quant.llama_engine import LlamaEngine
from quant.gguf_validation_loss import evaluate_gguf
from model.text.chat_format import Message
from model.inference.sampling import SamplingParams
export_model({str(tiny_model_dir)!r}, {str(tmp_path / "m.gguf")!r}, "q8_0")
backend = LlamaEngine.load({str(tmp_path / "m.gguf")!r})
events = list(backend.chat([Message("user", "Good morrow")], SamplingParams(max_tokens=5, seed=3)))
assert events[-1].prompt_tokens > 0
from quant.llama_worker import WorkerBackend
worker = WorkerBackend.load({str(tmp_path / "m.gguf")!r})
worker_events = list(worker.chat([Message("user", "Good morrow")], SamplingParams(max_tokens=5, seed=3)))
assert [e.text for e in worker_events[:-1]] == [e.text for e in events[:-1]]  # the same reply through the worker
worker.close()
assert "torch" not in sys.modules, "torch was imported"
print("ok")
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
    assert result.stderr == ""  # llama.cpp's log lines went to the log file


def test_report_lines_and_progress_bars(tiny_model_dir, tmp_path):
    import io

    from quant.gguf_export import StageProgress

    stream = io.StringIO()
    bars = StageProgress(stream)
    report = export_model(tiny_model_dir, tmp_path / "m.gguf", "q5_1", progress=bars)
    bars.close()
    shown = stream.getvalue()
    assert "writing" in shown and "quantizing" in shown and "28/28" in shown
    lines = report.lines()
    assert lines[0].startswith(f"wrote {tmp_path / 'm.gguf'} (q5_1, ") and "28 tensors" in lines[0]
    assert all("\n" not in line for line in lines)


@pytest.mark.parametrize("kind", ["f16", "q4_k_m"])
def test_files_carry_the_general_metadata_hubs_show(tmp_path, tiny_model_dir, kind):
    from gguf import GGUFReader

    from quant.gguf_export import export_model

    chat = ROOT / "chatapp" / "builtin" / "shakespeare-chat"
    for folder, base in ((tiny_model_dir, None), (chat, "shakespeare-base")):
        out = tmp_path / f"{folder.name}-{kind}.gguf"
        export_model(folder, out, kind)
        fields = GGUFReader(out).fields

        def value(key, fields=fields):
            return fields[key].contents() if key in fields else None

        assert (
            value("general.type") == "model"
            and value("general.basename") == json.loads((folder / "config.json").read_text())["name"]
        )
        assert value("general.size_label")[-1] in "KM" and value("general.quantization_version") == 2
        assert value("general.base_model.0.name") == base and value("general.finetune") == ("chat" if base else None)


def test_config_sizes_must_be_integers_to_export(tmp_path, tiny_model_dir):
    import shutil

    from quant.gguf_export import export_model
    from quant.gguf_layout import ExportError

    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config["architecture"]["n_layer"] = "6"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ExportError, match="n_layer must be a positive integer"):
        export_model(folder, tmp_path / "out.gguf", "f16")
