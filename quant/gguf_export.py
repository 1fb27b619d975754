"""A model folder to a GGUF file that llama.cpp (and Ollama, LM Studio) runs.

Architecture "gpt2", every hyper-parameter, the tokenizer as a "gpt2" BPE
vocabulary with pre-tokenizer "gpt-2", the chat format as a Jinja template
rendered from model.text.chat_format, and the model's name, description, license
and training metadata. F32, F16 and BF16 are written here with numpy; every
quantized type goes through llama.cpp's own quantizer from an F32
intermediate, so the file is what llama-quantize would make.

The file is written atomically: temporary files next to the target, checked
with the gguf reader, then renamed. A failed or interrupted export (Ctrl+C,
SIGTERM) leaves nothing under the target name (and an older file there
untouched), and its temporaries are removed; a new export sweeps those a killed
one left. It never writes into the model folder it reads, nor over a file that
is not an earlier chatapp export unless forced (quant/export_target.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import numpy as np

from model.network.files import publish_file
from model.network.model_folder import CHAT_FORMAT_VERSION, WEIGHTS_FILE, load_tokenizer, read_config
from model.network.safetensors_header import HeaderError, check_tensors, checked_architecture, gpt_shapes
from model.text.chat_format import jinja_chat_template
from model.text.tokenizer import SPECIAL_TOKENS
from quant.export_target import check_target, is_chatapp_gguf, sweep_stale_temporaries, temporary_prefix
from quant.gguf_check import check_gguf, gguf_constants, read_header
from quant.gguf_layout import (
    CHATAPP_KEY,
    DEFAULT_TYPE,
    DIRECT_TYPES,
    EXPORT_TYPES,
    ExportError,
    ProgressFn,
    tensor_names,
)
from quant.gguf_vocab import vocab_for_gguf
from quant.quantize import TensorNote, classify, quantize_file
from quant.weights import SafetensorsFile

if TYPE_CHECKING:
    from model.training.progress import Progress


@dataclass
class ExportReport:
    path: Path
    type: str
    size_bytes: int
    seconds: float
    tensor_types: dict[str, str] = field(default_factory=dict)
    fallbacks: list[TensorNote] = field(default_factory=list)  # not the asked type: rows do not fit its blocks
    kept: list[TensorNote] = field(default_factory=list)  # another type by design (llama.cpp's recipe)
    llama_fallback_count: int | None = None  # llama.cpp's own count, from its log

    def lines(self) -> list[str]:
        counts: dict[str, int] = {}
        for kind in self.tensor_types.values():
            counts[kind] = counts.get(kind, 0) + 1
        mix = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items(), key=lambda kv: -kv[1]))
        out = [
            f"wrote {self.path} ({self.type}, {self.size_bytes / 1e6:.1f} MB, "
            f"{len(self.tensor_types)} tensors: {mix}) in {self.seconds:.1f} s"
        ]
        if self.fallbacks:
            out.append(f"{len(self.fallbacks)} tensor(s) fell back to another type:")
            out += [f"  {t.name} {list(t.shape)} -> {t.type}: {t.reason}" for t in self.fallbacks]
        for t in self.kept:
            out.append(f"  note: {t.name} is {t.type}: {t.reason}")
        return out


def _architecture(config: dict, folder: Path) -> dict:
    """config.json's architecture, every size a positive integer (the loader's own rule)."""
    try:
        arch = dict(checked_architecture(config.get("architecture"), folder / "config.json"))
    except HeaderError as error:
        raise ExportError(str(error)) from None
    arch.setdefault("layer_norm_epsilon", 1e-5)
    return arch


def _general_metadata(writer, config: dict, arch: dict) -> None:
    """The general.* keys llama.cpp's converter writes and hubs show: type, basename, size,
    fine-tune and base model, quantization version."""
    import gguf

    training = config.get("training") or {}
    parameters = training.get("parameters") or sum(int(np.prod(shape)) for shape in gpt_shapes(arch).values())
    writer.add_type("model")
    writer.add_basename(str(config.get("name") or "model"))
    writer.add_size_label(gguf.utility.size_label(int(parameters), 0, 0, 0))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    base = training.get("base")
    if base:
        writer.add_finetune("chat")
        writer.add_base_model_count(1)
        writer.add_base_model_name(0, str(base))


def _check_weights(weights: SafetensorsFile, arch: dict) -> None:
    """The loader's own check (model.network.safetensors_header): the tensors our GPT needs, each of its shape."""
    try:
        check_tensors(weights.path, weights.entries, arch, gpt_shapes)
    except HeaderError as error:
        raise ExportError(str(error)) from None


def write_gguf(
    folder: str | Path,
    path: str | Path,
    out_type: str = "f32",
    *,
    progress: ProgressFn | None = None,
    chat_template: str | None = None,
    mark_chatapp: bool = True,
) -> None:
    """Write an F32, F16 or BF16 GGUF file of a model folder to `path` (not atomic).

    mark_chatapp=False leaves out chatapp's own keys: the file then looks like
    any foreign GGUF (the tests use that for the foreign-model path), and
    chat_template replaces ours ("" leaves it out).
    """
    import gguf

    if out_type not in DIRECT_TYPES:
        raise ExportError(f"write_gguf writes f32, f16 or bf16, not {out_type}")
    folder = Path(folder)
    try:
        config = read_config(folder)
        tokenizer = load_tokenizer(folder)
    except ValueError as error:
        raise ExportError(str(error)) from None
    arch = _architecture(config, folder)
    if arch["vocab_size"] != tokenizer.vocab_size:
        raise ExportError(
            f"{folder}: the tokenizer has {tokenizer.vocab_size} tokens, "
            f"config.json says vocab_size {arch['vocab_size']}"
        )
    weights = SafetensorsFile(folder / WEIGHTS_FILE)
    _check_weights(weights, arch)
    vocab = vocab_for_gguf(tokenizer)

    writer = gguf.GGUFWriter(str(path), "gpt2")
    writer.add_name(str(config.get("name") or folder.name))
    _general_metadata(writer, config, arch)
    writer.add_description(
        config.get("description") or f"GPT {arch['n_layer']}x{arch['n_embd']} trained from scratch with chatapp"
    )
    if config.get("license"):
        writer.add_license(str(config["license"]))
    writer.add_context_length(arch["context_length"])
    writer.add_embedding_length(arch["n_embd"])
    writer.add_feed_forward_length(4 * arch["n_embd"])
    writer.add_block_count(arch["n_layer"])
    writer.add_head_count(arch["n_head"])
    writer.add_layer_norm_eps(arch["layer_norm_epsilon"])
    writer.add_file_type(DIRECT_TYPES[out_type])

    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.token_types)
    writer.add_token_merges(vocab.merges)
    writer.add_bos_token_id(vocab.bos_id)
    writer.add_eos_token_id(vocab.eos_id)
    writer.add_eot_token_id(vocab.eot_id)
    writer.add_pad_token_id(vocab.pad_id)
    writer.add_add_bos_token(False)  # the chat format starts with a role marker
    writer.add_add_eos_token(False)
    if chat_template != "":  # "" leaves the template out (a test of foreign files without one)
        writer.add_chat_template(chat_template if chat_template is not None else jinja_chat_template())
    if mark_chatapp:
        writer.add_uint32(CHATAPP_KEY, int(config.get("chat_format_version", CHAT_FORMAT_VERSION)))
        writer.add_array("chatapp.special_tokens", list(SPECIAL_TOKENS))
        writer.add_string("chatapp.config", json.dumps(config, sort_keys=True))

    names = tensor_names(arch["n_layer"])
    plan = []  # (gguf name, source name, ggml type)
    for gguf_name, source in names:
        shape = weights.entries[source].shape
        kind = gguf.GGMLQuantizationType.F32
        if len(shape) == 2 and gguf_name != "position_embd.weight":
            kind = {
                "f32": gguf.GGMLQuantizationType.F32,
                "f16": gguf.GGMLQuantizationType.F16,
                "bf16": gguf.GGMLQuantizationType.BF16,
            }[out_type]
        plan.append((gguf_name, source, kind))
        item_size = 4 if kind == gguf.GGMLQuantizationType.F32 else 2
        nbytes = int(np.prod(shape)) * item_size
        writer.add_tensor_info(gguf_name, shape, np.dtype(np.float32), nbytes, raw_dtype=kind)

    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for done, (_gguf_name, source, kind) in enumerate(plan):
            data = weights.float32(source)
            if kind == gguf.GGMLQuantizationType.F16:
                data = data.astype(np.float16)
            elif kind == gguf.GGMLQuantizationType.BF16:
                data = gguf.quants.quantize(data, kind)
            writer.write_tensor_data(np.ascontiguousarray(data))
            if progress:
                progress("writing", done + 1, len(plan))
    finally:
        writer.close()
        weights.close()


def _temporary(out: Path, suffix: str) -> Path:
    fd, name = tempfile.mkstemp(prefix=temporary_prefix(out), suffix=suffix, dir=out.parent)
    os.close(fd)
    return Path(name)


def export_model(
    model_folder: str | Path,
    out_path: str | Path,
    type: str = DEFAULT_TYPE,
    *,
    progress: ProgressFn | None = None,
    threads: int | None = None,
    log_dir: str | Path | None = None,
    force: bool = False,
) -> ExportReport:
    """Export a model folder to `out_path` as a GGUF file of the given type; force replaces
    a file there that is not an earlier chatapp export."""
    kind = str(type).lower()
    if kind not in EXPORT_TYPES:
        raise ExportError(f"--type must be one of {', '.join(EXPORT_TYPES)}, not {type!r}")
    out = Path(out_path).expanduser()
    if out.is_dir():
        raise ExportError(f"{out}: is a folder; give the GGUF file to write, e.g. {out / 'model.gguf'}")
    check_target(model_folder, out, force, is_chatapp_gguf)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ExportError(f"{out.parent}: cannot create the folder ({error.strerror})") from None
    sweep_stale_temporaries(out)
    with sigterm_as_interrupt():
        return _export(model_folder, out, kind, progress, threads, log_dir)


@contextlib.contextmanager
def sigterm_as_interrupt():
    """While the block runs (in the main thread), SIGTERM raises KeyboardInterrupt, so the
    export's `finally` removes its temporaries instead of the process dying with them on disk."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _export(model_folder, out: Path, kind: str, progress, threads, log_dir) -> ExportReport:
    started = time.monotonic()
    temporary = _temporary(out, ".tmp")
    intermediate = None
    report = ExportReport(out, kind, 0, 0.0)
    try:
        if kind in DIRECT_TYPES:
            write_gguf(model_folder, temporary, kind, progress=progress)
        else:
            intermediate = _temporary(out, ".f32.tmp")
            write_gguf(model_folder, intermediate, "f32", progress=progress)
            result = quantize_file(intermediate, temporary, kind, threads=threads, progress=progress, log_dir=log_dir)
            report.llama_fallback_count = result.llama_fallback_count
        header = read_header(temporary)
        check_gguf(temporary, header)  # what we publish must pass the same check as any file we load
        kinds = gguf_constants().GGMLQuantizationType
        shapes = {t.name: (kinds(t.ggml_type).name, tuple(reversed(t.dims))) for t in header.tensors}
        report.tensor_types = {name: kind_and_shape[0] for name, kind_and_shape in shapes.items()}
        if kind not in DIRECT_TYPES:
            report.fallbacks, report.kept = classify(shapes, kind, result.logged)
        publish_file(temporary, out)
    finally:
        for path in (temporary, intermediate):
            if path is not None and path.exists():
                path.unlink()
    report.size_bytes = out.stat().st_size
    report.seconds = time.monotonic() - started
    return report


class StageProgress:
    """A ProgressFn for the command line: a model.training.progress.Progress bar per stage."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream
        self.stage: str | None = None
        self.bar: Progress | None = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        from model.training.progress import Progress

        if stage != self.stage:
            self.close()
            self.stage, self.bar = stage, Progress(total, stage, stream=self.stream, file_interval=5.0)
        assert self.bar is not None  # made for the stage
        self.bar.update(done)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.bar = None
