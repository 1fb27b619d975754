"""--threads and --threads-batch (chat, run, serve, bench), [model] threads in settings.toml, and where
they go: the llama.cpp worker's n_threads / n_threads_batch, torch.set_num_threads, `chatapp bench`."""

from __future__ import annotations

import subprocess
import sys

import pytest

from chatapp.bench import format_bench, run_bench
from chatapp.cli import build_parser
from chatapp.commands import threads_from_args
from chatapp.models.opening import Threads, llama_options
from chatapp.settings import Settings, parse_settings, render_settings
from tests.helpers.paths import BUILTIN_DIR, ROOT

GGUF = BUILTIN_DIR / "shakespeare-chat-q8_0.gguf"


@pytest.mark.parametrize("command", ["chat", "run", "serve", "bench"])
def test_every_model_command_takes_the_thread_options(command):
    args = build_parser().parse_args([command, "--threads", "3", "--threads-batch", "5"])
    assert (args.threads, args.threads_batch) == (3, 5)
    assert threads_from_args(args) == Threads(3, 5)
    args = build_parser().parse_args([command])
    assert threads_from_args(args) == Threads() and threads_from_args(args, settings_threads=2) == Threads(2, None)


def test_the_command_line_wins_over_the_settings_file():
    args = build_parser().parse_args(["chat", "--threads", "1"])
    assert threads_from_args(args, settings_threads=4) == Threads(1, None)


@pytest.mark.parametrize("flag, value", [("--threads", "0"), ("--threads-batch", "-1"), ("--threads", "5000")])
def test_a_bad_count_is_one_line(flag, value, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "chatapp", "run", "--model", str(GGUF), flag, value, "hi"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"CHATAPP_HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
        timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [f"chatapp: error: {flag} must be a whole number from 1 to 1024, got {value}"]


def test_the_worker_is_told_the_threads(monkeypatch, tmp_path):
    monkeypatch.setenv("CHATAPP_HOME", str(tmp_path))

    def without_cache(options: dict) -> dict:
        assert options.pop("state_cache_dir").startswith(str(tmp_path))
        return options

    assert without_cache(llama_options(None, Threads())) == {}
    assert without_cache(llama_options(512, Threads(2, None))) == {"max_context": 512, "n_threads": 2}
    assert without_cache(llama_options(None, Threads(1, 4))) == {"n_threads": 1, "n_threads_batch": 4}


def test_the_settings_file_has_threads():
    import tomllib

    assert "threads = 0" in render_settings(Settings())
    assert parse_settings(tomllib.loads(render_settings(Settings()))).threads == 0
    assert parse_settings({"model": {"threads": 2}}).threads == 2
    for bad in (-1, 1.5, "2", True, 100_000):
        settings = parse_settings({"model": {"threads": bad}})
        assert settings.threads == 0 and len(settings.notices) == 1 and "model.threads" in settings.notices[0]


def test_a_run_uses_the_threads_asked_for(tmp_path):
    from chatapp.models.opening import open_model

    for threads, expected in ((Threads(1, None), (1, 1)), (Threads(2, 1), (2, 1))):
        backend = open_model(str(GGUF), threads=threads).backend
        try:
            assert backend.threads == expected
            result = run_bench(backend, prompt_tokens=8, gen_tokens=4, runs=1, compare_no_cache=False)
            assert result["threads"] == {"decode": expected[0], "prompt": expected[1]}
            assert f"{expected[0]} decode / {expected[1]} prompt threads" in format_bench(result)
        finally:
            backend.close()


def test_the_torch_engine_uses_the_threads_asked_for(monkeypatch):
    pytest.importorskip("torch")
    from model.inference import torch_engine

    class Weights:
        def numel(self):
            return 1_000

        def element_size(self):
            return 4

    class Model:
        def parameters(self):
            return [Weights()]

    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    assert torch_engine.cpu_threads(Model()) is None  # the user chose with OMP_NUM_THREADS
    assert torch_engine.cpu_threads(Model(), 3) == (3, 3)
    assert torch_engine.cpu_threads(Model(), 3, 1) == (3, 1)
    assert torch_engine.cpu_threads(Model(), None, 2) == (1, 2)
