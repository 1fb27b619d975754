"""The torch engine itself: its KV cache against full recomputation, devices, CPU threads.
What both engines do alike is in tests/engines/test_both_engines_alike.py."""

import pytest
import torch

from model.inference.backend import TextPiece
from model.inference.sampling import SamplingParams
from model.inference.torch_engine import TorchEngine
from model.network.device import inference_dtype_name, pick_device
from model.text.chat_format import Message, render_ids


@pytest.fixture(scope="module")
def engine(any_model_dir) -> TorchEngine:
    return TorchEngine.load(any_model_dir, device="cpu")


def run(events):
    pieces, finished = [], None
    for event in events:
        if isinstance(event, TextPiece):
            pieces.append(event)
        else:
            finished = event
    return pieces, finished


def full_logits(engine, ids):
    with torch.inference_mode():
        return engine.model(torch.tensor([ids]))[0][0, -1].float()


@pytest.mark.slow
def test_cached_logits_equal_full_recomputation_over_200_steps_and_two_turns(engine):
    """At every decoding step the cached logits equal a full forward pass."""
    tokenizer = engine.tokenizer
    engine.reset_cache()
    conversation = [Message("user", "Good morrow, my lord. What news?")]
    previous_ids: list[int] = []
    for turn in range(2):
        prompt = render_ids(conversation, tokenizer, known_replies=engine.known_replies)
        steps = 100
        original_evaluate = engine.evaluate
        checked = []

        def checking_evaluate(start, ids, original_evaluate=original_evaluate, prompt=prompt, checked=checked):
            logits = original_evaluate(start, ids)
            sequence = engine.cached_ids[:start] + list(ids)  # what the KV cache should now hold
            assert sequence[: len(prompt)] == prompt[: len(sequence)]
            reference = full_logits(engine, sequence)
            checked.append(float(abs(torch.from_numpy(logits) - reference).max()))
            return logits

        generated: list[int] = []
        cached_before = list(engine.cached_ids)
        engine.evaluate = checking_evaluate
        try:
            params = SamplingParams(temperature=1.0, top_p=1.0, max_tokens=steps, seed=turn)
            for event in engine.generate_ids(prompt, params, stop_ids=set()):
                if isinstance(event, TextPiece):
                    generated.extend(event.token_ids)
                else:
                    finished = event
        finally:
            del engine.evaluate
        assert len(checked) >= steps
        # float32 noise from the summation order is ~1e-5 on logits of ~20;
        # a cache fed the wrong ids is off by 1e-2 or more
        assert max(checked) <= 2e-5, [(i, c) for i, c in enumerate(checked) if c > 1e-5][:5]
        if turn == 1:  # the first turn came from the cache: only the tokens after the shared prefix ran
            from model.inference.reply_stream import common_prefix_length

            shared = common_prefix_length(cached_before, prompt)
            assert shared == len(previous_ids) - 1  # everything but the last sampled token was cached
            assert finished.prefilled_tokens == len(prompt) - shared
        previous_ids = prompt + generated
        conversation += [Message("assistant", tokenizer.decode(generated)), Message("user", "Say on.")]


def test_device_selection():
    yes, no = (lambda: True), (lambda: False)
    assert pick_device("auto", yes, yes) == "cuda"
    assert pick_device("auto", no, yes) == "mps"
    assert pick_device("auto", no, no) == "cpu"
    assert pick_device("cpu", yes, yes) == "cpu"
    with pytest.raises(ValueError, match="no CUDA"):
        pick_device("cuda", no, no)
    with pytest.raises(ValueError, match="MPS"):
        pick_device("mps", no, no)
    with pytest.raises(ValueError, match="must be one of"):
        pick_device("tpu", no, no)
    assert inference_dtype_name("cpu") == "float32"
    assert inference_dtype_name("cuda", bf16_supported=True) == "bfloat16"
    assert inference_dtype_name("cuda", bf16_supported=False) == "float16"
    assert inference_dtype_name("mps") == "float16"


def test_a_small_model_decodes_on_one_cpu_thread_unless_the_user_chose(tiny_model_dir, monkeypatch):
    """Threads cost a small model more than they bring (model/inference/threads.py)."""
    from model.inference.threads import default_threads

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        engine = TorchEngine.load(tiny_model_dir, device="cpu")
        assert engine.threads == default_threads(4 * engine.model.num_parameters()) == (1, 1)
        run(engine.generate_ids([1, 2, 3], SamplingParams(max_tokens=4, seed=0), stop_ids=set()))
        assert torch.get_num_threads() == 1

        torch.set_num_threads(2)
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        engine = TorchEngine.load(tiny_model_dir, device="cpu")
        assert engine.threads is None
        run(engine.generate_ids([1, 2, 3], SamplingParams(max_tokens=4, seed=0), stop_ids=set()))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_default_threads_grow_with_the_model_and_stop_at_the_cores(monkeypatch):
    from model.inference import threads

    monkeypatch.setattr(threads, "available_cores", lambda: 8)
    assert threads.default_threads(20_000_000) == (1, 1)
    assert threads.default_threads(250_000_000) == (2, 5)
    assert threads.default_threads(4_000_000_000) == (4, 8)
    assert threads.default_threads(None) == (4, 8)
