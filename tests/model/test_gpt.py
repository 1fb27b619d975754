import pytest
import torch

from model.network.gpt import GPT, GPTConfig
from model.network.hf_convert import to_hf_gpt2
from model.text.tokenizer import Tokenizer
from model.training.corpus import builtin_split
from model.training.dataset import BUILTIN_TOKENIZER

SMALL = GPTConfig(vocab_size=4096, context_length=64, n_layer=3, n_head=4, n_embd=64)


def trained_like(config: GPTConfig, seed: int = 0) -> GPT:
    """A GPT with every weight random (biases and norms too), not just the init."""
    torch.manual_seed(seed)
    model = GPT(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.copy_(torch.randn_like(p) * 0.1 + (1.0 if "ln" in name and name.endswith("weight") else 0.0))
    return model.eval()


def test_gpt2_shapes_and_weight_tying():
    model = GPT(SMALL)
    assert model.lm_head.weight is model.token_embedding.weight
    logits, loss = model(torch.zeros(2, 10, dtype=torch.long), torch.zeros(2, 10, dtype=torch.long))
    assert logits.shape == (2, 10, 4096) and loss.ndim == 0


def test_gpt2_initialisation_scales_residual_projections():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=512, context_length=64, n_layer=8, n_head=4, n_embd=256))
    std_qkv = model.blocks[0].attn.qkv.weight.std().item()
    std_proj = model.blocks[0].attn.proj.weight.std().item()
    assert std_qkv == pytest.approx(0.02, rel=0.05)
    assert std_proj == pytest.approx(0.02 / (2 * 8) ** 0.5, rel=0.05)


def test_context_overflow_is_an_error():
    with pytest.raises(ValueError, match="exceeds the context length"):
        GPT(SMALL)(torch.zeros(1, 65, dtype=torch.long))


@pytest.mark.parametrize("source", ["random", "corpus"])
def test_logits_match_hugging_face_gpt2(source):
    model = trained_like(SMALL)
    hf = to_hf_gpt2(model)
    if source == "random":
        ids = torch.randint(0, SMALL.vocab_size, (3, SMALL.context_length), generator=torch.Generator().manual_seed(1))
    else:
        tokenizer = Tokenizer.load(BUILTIN_TOKENIZER)
        text = builtin_split().validation[5].text
        ids = torch.tensor([tokenizer.encode(text)[: SMALL.context_length]])
    with torch.no_grad():
        ours, _ = model(ids)
        theirs = hf(ids).logits
    assert (ours - theirs).abs().max().item() <= 1e-4


def test_shipped_model_matches_hugging_face(any_model_dir):
    from model.network.model_folder import load_model

    model, tokenizer, _ = load_model(any_model_dir)
    ids = torch.tensor([tokenizer.encode(builtin_split().validation[0].text)[: model.config.context_length]])
    with torch.no_grad():
        assert (model(ids)[0] - to_hf_gpt2(model)(ids).logits).abs().max().item() <= 1e-4


def test_masked_loss_counts_only_masked_positions():
    model = trained_like(SMALL)
    ids = torch.randint(0, 4096, (1, 12), generator=torch.Generator().manual_seed(2))
    targets = torch.randint(0, 4096, (1, 12), generator=torch.Generator().manual_seed(3))
    mask = torch.zeros(1, 12)
    mask[0, 5:] = 1
    logits, masked = model(ids, targets, loss_mask=mask)
    expected = torch.nn.functional.cross_entropy(logits[0, 5:], targets[0, 5:])
    assert masked.item() == pytest.approx(expected.item(), rel=1e-5)


def test_weight_decay_groups():
    groups = GPT(SMALL).optimizer_groups(0.1)
    assert all(p.dim() == 2 for p in groups[0]["params"]) and groups[0]["weight_decay"] == 0.1
    assert all(p.dim() == 1 for p in groups[1]["params"]) and groups[1]["weight_decay"] == 0.0
