"""Our GGUF file, as the exporter, the quantizer and the checker all see it.

The types a model folder can be exported to, the GGUF name of every tensor of
our "gpt2" layout (their shapes are model.network.safetensors_header.gpt_shapes),
the key that marks a file chatapp wrote, and what the export steps share:
ExportError and the progress callback. Plain data that imports nothing, so any
module (the command line at start, too) can use it without pulling in the others.
"""

from __future__ import annotations

from collections.abc import Callable

# written by gguf_export with numpy; the value is general.file_type
DIRECT_TYPES = {"f32": 0, "f16": 1, "bf16": 32}
# quantized by llama.cpp (quantize.py): our --type -> (llama_ftype, the GGML type most matrices get)
QUANT_TYPES = {
    "q8_0": (7, "Q8_0"),
    "q4_0": (2, "Q4_0"),
    "q4_1": (3, "Q4_1"),
    "q5_0": (8, "Q5_0"),
    "q5_1": (9, "Q5_1"),
    "q4_k_m": (15, "Q4_K"),
    "q5_k_m": (17, "Q5_K"),
    "q6_k": (18, "Q6_K"),
}
EXPORT_TYPES = (*DIRECT_TYPES, *QUANT_TYPES)
DEFAULT_TYPE = "q8_0"

CHATAPP_KEY = "chatapp.chat_format_version"  # present only in files chatapp exported

ProgressFn = Callable[[str, int, int], None]  # (stage, done, total)


class ExportError(ValueError):
    """The export cannot be done; a one-line message."""


def tensor_names(n_layer: int) -> list[tuple[str, str]]:
    """(GGUF name, model.safetensors name) for every tensor, in file order."""
    names = [
        ("token_embd.weight", "token_embedding.weight"),
        ("position_embd.weight", "position_embedding.weight"),
    ]
    for i in range(n_layer):
        for gguf_part, ours in (
            ("attn_norm", "ln_1"),
            ("attn_qkv", "attn.qkv"),
            ("attn_output", "attn.proj"),
            ("ffn_norm", "ln_2"),
            ("ffn_up", "mlp.up"),
            ("ffn_down", "mlp.down"),
        ):
            for suffix in ("weight", "bias"):
                names.append((f"blk.{i}.{gguf_part}.{suffix}", f"blocks.{i}.{ours}.{suffix}"))
    names += [("output_norm.weight", "ln_f.weight"), ("output_norm.bias", "ln_f.bias")]
    return names
