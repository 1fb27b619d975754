import json
import subprocess
import sys

import pytest
from safetensors.numpy import load_file

from model.training.train import TrainOptions, train


def chatapp(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "chatapp", *args], capture_output=True, text=True, **kwargs)


@pytest.mark.slow
def test_train_tiny_then_eval_json_on_the_real_corpus(tmp_path):
    out = tmp_path / "tiny"
    trained = chatapp("train", "--preset", "tiny", "--steps", "8", "--out", str(out), "--device", "cpu")
    assert trained.returncode == 0, trained.stderr
    assert {"config.json", "model.safetensors", "tokenizer.tiktoken", "history.csv", "history.png"} <= {
        p.name for p in out.iterdir()
    }
    evaluated = chatapp("eval", str(out), "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    result = json.loads(evaluated.stdout)
    assert result["tokens"] > 80_000 and result["chars"] > 250_000
    assert (
        3.0 < result["nats_per_token"] < 8.4
    )  # better than uniform over 4096 tokens (8.32) is not guaranteed in 8 steps
    assert result["nats_per_char"] == pytest.approx(result["nats_per_token"] * result["tokens"] / result["chars"])
    config = json.loads((out / "config.json").read_text())
    assert config["training"]["validation"]["nats_per_token"] == pytest.approx(result["nats_per_token"], rel=1e-4)
    rows = (out / "history.csv").read_text().splitlines()
    assert rows[0].startswith("step,tokens_seen,train_loss,val_loss")


@pytest.mark.slow
def test_resume_continues_exactly(tmp_path, monkeypatch):
    import model.training.loop as loop

    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(TrainOptions(out=str(straight), preset="tiny", steps=30, device="cpu"), log=lambda line: None)

    # interrupt the second run right after its checkpoint at step 15 (the tiny preset checkpoints every 15)
    real_save = loop.save_checkpoint

    def save_then_interrupt(folder, model, optimizer, state):
        real_save(folder, model, optimizer, state)
        if state["step"] == 15:
            raise KeyboardInterrupt

    monkeypatch.setattr(loop, "save_checkpoint", save_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        train(TrainOptions(out=str(resumed), preset="tiny", steps=30, device="cpu"), log=lambda line: None)
    monkeypatch.setattr(loop, "save_checkpoint", real_save)
    train(TrainOptions(out=str(resumed), preset="tiny", steps=30, device="cpu", resume=True), log=lambda line: None)
    a = load_file(str(straight / "model.safetensors"))
    b = load_file(str(resumed / "model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        assert (a[name] == b[name]).all(), name


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    result = chatapp("train", "--preset", "tiny", "--out", str(tmp_path / "none"), "--resume")
    assert result.returncode == 1
    assert result.stderr.strip().startswith("chatapp: error: --resume: no checkpoint")
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_two_process_ddp_stays_in_sync(tmp_path):
    out = tmp_path / "ddp"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            "29517",
            "-m",
            "chatapp",
            "train",
            "--preset",
            "tiny",
            "--steps",
            "6",
            "--out",
            str(out),
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**__import__("os").environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    training = json.loads((out / "config.json").read_text())["training"]
    assert training["world_size"] == 2
    assert training["replicas_in_sync"] is True
    assert training["tokens_per_step"] == 2 * 8 * 256


def test_training_on_user_text_trains_its_own_tokenizer(tmp_path):
    from model.training.corpus import builtin_works

    data = tmp_path / "mine.txt"
    data.write_text(builtin_works()[0].text[:60_000])
    out = tmp_path / "mine"
    train(
        TrainOptions(out=str(out), preset="tiny", steps=2, data=str(data), vocab_size=300, device="cpu"),
        log=lambda line: None,
    )
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"]["vocab_size"] == 300
