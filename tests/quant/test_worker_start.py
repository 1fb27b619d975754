"""The llama.cpp worker started early (quant/worker_start.py): the command line starts it before its own
imports and, for a file it names, checks the file and has the worker load it; the backend takes that
worker instead of starting one, and any other backend gets a worker of its own."""

from __future__ import annotations

import pytest

from chatapp.cli import build_parser, start_worker_early
from chatapp.launch import names_a_gguf_file, start_worker_now
from model.inference.sampling import SamplingParams
from model.text.chat_format import Message
from quant import llama_worker, worker_start
from tests.helpers.paths import BUILTIN_DIR

GGUF = BUILTIN_DIR / "shakespeare-chat-q8_0.gguf"


@pytest.fixture(autouse=True)
def no_spare_left():
    yield
    worker_start.discard_spare()


def count_checks(monkeypatch) -> list:
    calls: list = []
    real = llama_worker.check_gguf
    monkeypatch.setattr(llama_worker, "check_gguf", lambda path: calls.append(path) or real(path))
    return calls


def test_the_backend_takes_the_worker_the_command_line_had_load_its_file(monkeypatch, tmp_path):
    worker_start.start_spare(str(tmp_path), str(GGUF), {"n_threads": 1})
    spare = worker_start._spare[0]
    assert spare.loading is not None and spare.loading[0] == str(GGUF)
    calls = count_checks(monkeypatch)
    backend = llama_worker.WorkerBackend(GGUF, log_dir=tmp_path, n_threads=1)
    try:
        assert backend._process is spare.process and not worker_start._spare
        assert calls == []  # checked once, by the command line
        assert list(backend.chat([Message("user", "hi")], SamplingParams(max_tokens=2, seed=0)))
    finally:
        backend.close()


def test_a_worker_loading_another_file_or_with_other_options_is_stopped(monkeypatch, tmp_path):
    for options in ({"n_threads": 2}, {"n_threads": 1, "max_context": 64}):
        worker_start.start_spare(str(tmp_path), str(GGUF), {"n_threads": 1})
        spare = worker_start._spare[0]
        assert worker_start.take_spare(str(tmp_path), str(GGUF), options) is None
        assert not spare.process.is_alive() and not worker_start._spare
    worker_start.start_spare(str(tmp_path), str(GGUF), {})
    spare = worker_start._spare[0]
    assert worker_start.take_spare(str(tmp_path), str(tmp_path / "other.gguf"), {}) is None
    assert not spare.process.is_alive()


def test_a_bad_file_is_not_sent_and_the_backend_says_why(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(GGUF.read_bytes()[:300])
    worker_start.start_spare(str(tmp_path), str(bad), {})
    assert worker_start._spare[0].loading is None
    with pytest.raises(llama_worker.GGUFFileError, match="damaged or truncated"):
        llama_worker.WorkerBackend(bad, log_dir=tmp_path)
    assert not worker_start._spare


@pytest.mark.parametrize(
    "argv, loads",
    [
        (["run", "--model", str(GGUF), "hi"], True),
        (["bench", str(GGUF)], True),
        (["serve", str(GGUF), "--parallel", "1"], True),
        (["chat", str(GGUF)], False),  # the TUI may take its threads from the settings file: started, not loading
    ],
)
def test_the_command_line_starts_a_worker_for_a_gguf_file(monkeypatch, tmp_path, argv, loads):
    monkeypatch.setenv("CHATAPP_HOME", str(tmp_path))
    start_worker_early(build_parser().parse_args(argv))
    assert len(worker_start._spare) == 1
    assert (worker_start._spare[0].loading is not None) == loads


def test_serve_on_parallel_slots_starts_no_worker(monkeypatch, tmp_path):
    """The slots run in the server's own process: a worker started for them would only wait."""
    monkeypatch.setenv("CHATAPP_HOME", str(tmp_path))
    start_worker_early(build_parser().parse_args(["serve", str(GGUF)]))
    assert not worker_start._spare


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "hi"],  # the default model
        ["run", "--model", str(BUILTIN_DIR / "shakespeare-chat"), "hi"],  # a folder: torch
        ["run", "--model", str(GGUF), "--backend", "torch", "hi"],
        ["run", "--model", "missing.gguf", "hi"],
        ["bench", str(GGUF), "--in-process"],
        ["models"],
    ],
)
def test_no_worker_is_started_for_anything_else(monkeypatch, tmp_path, argv):
    monkeypatch.setenv("CHATAPP_HOME", str(tmp_path))
    start_worker_early(build_parser().parse_args(argv))
    assert not worker_start._spare
    assert not names_a_gguf_file(argv)  # nor before the arguments are parsed


def test_the_launcher_starts_the_worker_before_parsing_and_the_command_line_has_that_one_load(monkeypatch, tmp_path):
    monkeypatch.setenv("CHATAPP_HOME", str(tmp_path))
    argv = ["run", "--model", str(GGUF), "--threads", "1", "hi"]
    start_worker_now(argv)
    assert len(worker_start._spare) == 1 and worker_start._spare[0].loading is None
    started = worker_start._spare[0].process
    start_worker_early(build_parser().parse_args(argv))
    assert len(worker_start._spare) == 1
    spare = worker_start._spare[0]
    assert spare.process is started and spare.loading is not None and spare.loading[0] == str(GGUF)
    backend = llama_worker.WorkerBackend(GGUF, log_dir=tmp_path / "data" / "logs", **spare.loading[2])
    try:
        assert backend._process is started
        assert list(backend.chat([Message("user", "hi")], SamplingParams(max_tokens=2, seed=0)))
    finally:
        backend.close()


@pytest.mark.parametrize(
    "argv, starts",
    [
        (["run", "--model", str(GGUF), "hi"], True),
        (["run", f"--model={GGUF}", "hi"], True),
        (["serve", "--port", "8080", str(GGUF), "--parallel", "1"], True),
        (["serve", "--port", "8080", str(GGUF)], False),  # parallel slots: in the server's own process
        (["bench", str(GGUF), "--parallel", "1,2"], False),  # and in the bench's
        (["chat", str(GGUF)], True),
        (["run", "--model", str(GGUF), "--endpoint", "http://localhost:1", "hi"], False),
        (["run", "--model", str(GGUF), "--help"], False),
        (["export", str(GGUF)], False),
        ([], False),
    ],
)
def test_the_launcher_looks_for_a_gguf_file_on_the_command_line(argv, starts):
    assert names_a_gguf_file(argv) is starts


def test_a_forked_worker_ends_when_its_app_is_killed(tmp_path):
    """The worker holds no copy of the app's end of the pipe: an app gone (kill -9, os._exit) is an end of
    file to it, and it leaves instead of waiting forever."""
    import subprocess
    import sys

    from tests.helpers.paths import ROOT
    from tests.helpers.processes import assert_ends

    code = (
        "import os, sys; from quant import worker_start; worker_start.start_spare(sys.argv[1]); "
        "print(worker_start._spare[0].process.pid, flush=True); os._exit(0)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, cwd=ROOT, timeout=60, check=True
    )
    assert_ends(int(done.stdout.split()[0]), "the worker of an app that ended with os._exit")
