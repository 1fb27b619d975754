"""Our GPT's weights as Hugging Face transformers' GPT2LMHeadModel.

Used as an independent oracle (the tests show both give the same logits, so
the architecture is GPT-2's) and to compare speed with HF's generate().
transformers is a test-only dependency, imported here only when called.
"""

from __future__ import annotations

from model.network.gpt import GPT
from model.network.hf_folder import gpt2_config, hf_tensor_names


def to_hf_gpt2(model: GPT):
    from transformers import GPT2Config, GPT2LMHeadModel

    # bos/eos None: ours are special tokens after the ranks, not GPT-2's 50256
    hf = GPT2LMHeadModel(GPT2Config(**gpt2_config(model.config.to_dict())))
    ours = model.state_dict()
    state = {
        theirs: ours[name].t().contiguous() if transposed else ours[name]
        for theirs, name, transposed in hf_tensor_names(model.config.n_layer)
    }
    missing, unexpected = hf.load_state_dict(state, strict=False)
    missing = [
        m for m in missing if m != "lm_head.weight" and not m.endswith("attn.bias") and not m.endswith("masked_bias")
    ]
    if missing or unexpected:
        raise ValueError(f"conversion mismatch: missing {missing}, unexpected {unexpected}")
    hf.tie_weights()
    # transformers wraps PreTrainedModel.to in functools.wraps(nn.Module.to), whose typing loses the bound self
    return hf.to(dtype=next(model.parameters()).dtype).eval()  # type: ignore[call-arg]
