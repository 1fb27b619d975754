"""Our GPT's weights as Hugging Face transformers' GPT2LMHeadModel.

Used as an independent oracle (the tests show both give the same logits, so
the architecture is GPT-2's) and to compare speed with HF's generate().
transformers is a test-only dependency, imported here only when called.
"""

from __future__ import annotations

from model.network.gpt import GPT


def to_hf_gpt2(model: GPT):
    from transformers import GPT2Config, GPT2LMHeadModel

    c = model.config
    hf_config = GPT2Config(
        vocab_size=c.vocab_size,
        n_positions=c.context_length,
        n_embd=c.n_embd,
        n_layer=c.n_layer,
        n_head=c.n_head,
        n_inner=4 * c.n_embd,
        activation_function="gelu_new",  # GPT-2's tanh approximation, as ours
        layer_norm_epsilon=c.layer_norm_epsilon,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        tie_word_embeddings=True,
        bos_token_id=None,  # ours are special tokens after the ranks, not GPT-2's 50256
        eos_token_id=None,
    )
    hf = GPT2LMHeadModel(hf_config)
    ours = model.state_dict()
    state = {
        "transformer.wte.weight": ours["token_embedding.weight"],
        "transformer.wpe.weight": ours["position_embedding.weight"],
        "transformer.ln_f.weight": ours["ln_f.weight"],
        "transformer.ln_f.bias": ours["ln_f.bias"],
    }
    # HF's Conv1D stores (in, out); our nn.Linear stores (out, in)
    renames = {"ln_1": "ln_1", "attn.qkv": "attn.c_attn", "attn.proj": "attn.c_proj", "ln_2": "ln_2", "mlp.up": "mlp.c_fc", "mlp.down": "mlp.c_proj"}
    for i in range(c.n_layer):
        for ours_name, hf_name in renames.items():
            weight = ours[f"blocks.{i}.{ours_name}.weight"]
            state[f"transformer.h.{i}.{hf_name}.weight"] = weight if ours_name.startswith("ln") else weight.t().contiguous()
            state[f"transformer.h.{i}.{hf_name}.bias"] = ours[f"blocks.{i}.{ours_name}.bias"]
    missing, unexpected = hf.load_state_dict(state, strict=False)
    missing = [m for m in missing if m != "lm_head.weight" and not m.endswith("attn.bias") and not m.endswith("masked_bias")]
    if missing or unexpected:
        raise ValueError(f"conversion mismatch: missing {missing}, unexpected {unexpected}")
    hf.tie_weights()
    return hf.to(dtype=next(model.parameters()).dtype).eval()
