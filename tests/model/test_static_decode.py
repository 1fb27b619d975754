"""The torch engine's static-shape decode step (gpt.py decode_step), eager and compiled
(model/inference/compiled_step.py), against full recomputation; the prefill's last
position; the compile's fallback and options."""

import pytest
import torch

from chatapp.cli import build_parser
from model.inference.backend import Finished, TextPiece
from model.inference.compiled_step import CompiledStep, half_weight_copy, use_compile_cache
from model.inference.sampling import SamplingParams
from model.inference.torch_engine import TorchEngine
from model.network.gpt import GPT, GPTConfig
from model.network.model_folder import load_model

TOLERANCE = 1e-5  # float32 summation-order noise on logits of ~20; a wrong cache is off by 1e-2 or more


def full_logits(model, ids: list[int]) -> torch.Tensor:
    with torch.inference_mode():
        return model(torch.tensor([ids]))[0][0, -1]


def decode_all_positions(model, step, cache, ids: list[int]) -> float:
    """Run ids one at a time through `step`; the largest difference from full recomputation."""
    worst = 0.0
    with torch.inference_mode():
        for position, token in enumerate(ids):
            logits = step(torch.tensor([[token]]), torch.tensor([position]), cache.keys, cache.values)[0]
            worst = max(worst, float((logits - full_logits(model, ids[: position + 1])).abs().max()))
    return worst


@pytest.fixture(scope="module")
def tiny_model(tiny_model_dir):
    model, _, _ = load_model(tiny_model_dir, device="cpu", dtype=torch.float32)
    return model.eval()


def test_eager_decode_step_equals_full_recomputation_up_to_the_last_position(tiny_model):
    ids = torch.randint(
        0, tiny_model.config.vocab_size, (tiny_model.config.context_length,), generator=torch.Generator().manual_seed(0)
    )
    worst = decode_all_positions(tiny_model, tiny_model.decode_step, tiny_model.new_cache(), ids.tolist())
    assert worst <= TOLERANCE


def test_prefill_gives_the_last_positions_logits_and_fills_the_cache(tiny_model):
    ids = list(range(10, 40))
    cache = tiny_model.new_cache()
    with torch.inference_mode():
        first = tiny_model.prefill(torch.tensor([ids[:20]]), cache, 0)[0]
        rest = tiny_model.prefill(torch.tensor([ids[20:]]), cache, 20)[0]  # on top of the cached prefix
        step = tiny_model.decode_step(torch.tensor([[7]]), torch.tensor([30]), cache.keys, cache.values)[0]
    assert first.shape == (tiny_model.config.vocab_size,)
    assert float((first - full_logits(tiny_model, ids[:20])).abs().max()) <= TOLERANCE
    assert float((rest - full_logits(tiny_model, ids)).abs().max()) <= TOLERANCE
    assert float((step - full_logits(tiny_model, ids + [7])).abs().max()) <= TOLERANCE


def test_half_weight_copy_halves_only_weights_float16_holds_exactly():
    model = GPT(GPTConfig(vocab_size=64, context_length=16, n_layer=1, n_head=2, n_embd=32))
    assert half_weight_copy(model).blocks[0].attn.qkv.weight.dtype == torch.float32  # random float32: not exact
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(parameter.half().float())
    twin = half_weight_copy(model)
    assert twin.blocks[0].mlp.up.weight.dtype == torch.float16
    assert twin.blocks[0].mlp.up.bias.dtype == torch.float32
    assert twin.lm_head.weight is twin.token_embedding.weight  # still tied
    assert model.lm_head.weight.dtype == torch.float32  # the original is untouched


def test_a_failing_compile_leaves_the_engine_eager_with_a_one_line_notice(tiny_model_dir, monkeypatch):
    def no_compiler(*args, **kwargs):
        raise RuntimeError("no C compiler found\nmore detail")

    monkeypatch.setattr(torch, "compile", no_compiler)
    engine = TorchEngine.load(tiny_model_dir, device="cpu", compile="on")
    engine.compiling.wait()
    assert engine.compile_state == "failed: RuntimeError: no C compiler found"  # before the next token takes it up
    assert engine.wait_for_compile() == "failed: RuntimeError: no C compiler found"
    events = list(engine.generate_ids([1, 2, 3], SamplingParams(temperature=0, max_tokens=5), stop_ids=set()))
    finished = events[-1]
    assert isinstance(finished, Finished) and finished.completion_tokens == 5
    assert finished.notices == ["torch.compile failed, decoding without it (RuntimeError: no C compiler found)"]


def test_compile_option_and_cache_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("CHATAPP_COMPILE")
    parser = build_parser()
    for command in (["run", "hi"], ["chat"], ["bench"], ["serve"]):
        assert parser.parse_args(command).compile == "auto"
        assert parser.parse_args(command + ["--compile", "off"]).compile == "off"
    monkeypatch.setenv("CHATAPP_COMPILE", "on")
    assert build_parser().parse_args(["chat"]).compile == "on"
    with pytest.raises(SystemExit):
        parser.parse_args(["bench", "--compile", "maybe"])
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    use_compile_cache(tmp_path / "kernels")
    assert (tmp_path / "kernels").is_dir()
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    use_compile_cache(tmp_path / "other")  # the user's choice wins
    assert not (tmp_path / "other").exists()


@pytest.mark.slow
def test_compiled_step_equals_full_recomputation_and_the_engine_switches_mid_reply(
    any_model_dir, tmp_path, monkeypatch
):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    use_compile_cache(tmp_path / "kernels")
    model, _, _ = load_model(any_model_dir, device="cpu", dtype=torch.float32)
    model.eval()
    compiling = CompiledStep(model, "cpu")
    assert compiling.wait(600) and compiling.error is None, compiling.error
    ids = torch.randint(
        0, model.config.vocab_size, (model.config.context_length,), generator=torch.Generator().manual_seed(1)
    )
    step, cache = compiling.adopt(model.new_cache())
    assert decode_all_positions(model, step, cache, ids.tolist()) <= 2 * TOLERANCE

    params = SamplingParams(temperature=0, max_tokens=40)
    eager = TorchEngine.load(any_model_dir, device="cpu", compile="off")
    expected = [
        t
        for e in eager.generate_ids([5, 6, 7], params, stop_ids=set())
        if isinstance(e, TextPiece)
        for t in e.token_ids
    ]
    switching = TorchEngine.load(any_model_dir, device="cpu", compile="on")
    events = switching.generate_ids([5, 6, 7], params, stop_ids=set())
    got = []
    for event in events:
        if isinstance(event, TextPiece):
            got.extend(event.token_ids)
            if len(got) == 10:
                switching.wait_for_compile()  # the compiled step takes over from the 11th token, on the same cache
    assert switching.compile_status == "on"
    assert got == expected


@pytest.mark.slow
def test_the_command_exits_cleanly_while_a_compile_is_still_under_way(tiny_model_dir, tmp_path):
    """torch can abort a process that exits mid-compile ("terminate called ..."), and waiting for the
    compile can take tens of seconds: the command leaves at once (os._exit), with its own exit code
    and its output complete."""
    import os
    import subprocess
    import sys

    env = {
        **os.environ,
        "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "cold-cache"),
    }  # a cold compile: it outlasts the reply
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "chatapp",
            "run",
            "--model",
            str(tiny_model_dir),
            "--compile",
            "on",
            "--max-tokens",
            "3",
            "--seed",
            "1",
            "--json",
            "Hello",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "terminate called" not in result.stderr and "Abort" not in result.stderr
    assert '"completion_tokens"' in result.stdout


def test_the_compile_pauses_while_the_engine_decodes_but_not_forever(monkeypatch):
    """The compile thread's profile hook: no pause when nothing decodes; a pause while tokens are
    decoded; after MOST_PAUSED_S a run window, so a compile under constant decoding still ends."""
    import time

    from model.inference import compiled_step

    monkeypatch.setattr(compiled_step, "MOST_PAUSED_S", 0.3)
    monkeypatch.setattr(compiled_step, "LEAST_RUN_S", 5.0)
    step = object.__new__(CompiledStep)  # the hook alone, without starting a compile
    step.decoding_until, step._running_until = 0.0, 0.0

    def hook_seconds() -> float:
        started = time.monotonic()
        step._yield_to_decoding(None, "call", None)
        return time.monotonic() - started

    assert hook_seconds() < 0.1  # nothing decodes
    step.decoding_until = time.monotonic() + 60  # the engine decodes on and on
    assert hook_seconds() >= 0.3  # paused...
    assert hook_seconds() < 0.1  # ...then runs for its window


def test_the_step_of_every_slot_gives_the_decoding_rows_logits_and_stores_only_theirs(tiny_model):
    """GPT.decode_slots (compiled for parallel slots) against GPT.decode_rows (eager, the decoding rows only)."""
    rows, positions = torch.tensor([0, 2]), torch.tensor([3, 1])
    ids = torch.tensor([[5], [9]])
    by_rows = tiny_model.new_cache(batch=3)
    for tensor in by_rows.keys + by_rows.values:
        tensor.normal_(generator=torch.Generator().manual_seed(tensor.numel()))
    every_slot = tiny_model.new_cache(batch=3)
    every_slot.copy_from(by_rows)
    with torch.inference_mode():
        expected = tiny_model.decode_rows(ids, positions, rows, by_rows)
        got = tiny_model.decode_slots(
            torch.tensor([[5], [7], [9]]),
            torch.tensor([3, 4, 1]),
            torch.tensor([True, False, True]),
            every_slot.keys,
            every_slot.values,
        )
    assert torch.allclose(got[[0, 2]], expected, atol=1e-5)
    for mine, theirs in zip(every_slot.keys + every_slot.values, by_rows.keys + by_rows.values, strict=True):
        assert torch.allclose(mine, theirs, atol=1e-5)  # rows 0 and 2 written alike
        assert torch.equal(mine[1], theirs[1])  # row 1 (not written) kept what it held at position 4
