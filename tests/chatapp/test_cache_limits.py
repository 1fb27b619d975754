"""The saved prompts' limits ([cache] memory_mb and disk_mb in settings.toml): read with a notice for a bad
value, and where they go: the llama.cpp engine's StateCache (in its worker too, also one started early
with other limits) and the torch engine's prompt cache; a lowered limit drops what it no longer holds."""

from __future__ import annotations

import pytest

from chatapp.models import opening
from chatapp.models.opening import CacheLimits, Threads, apply_cache_limits, llama_options, open_backend
from chatapp.models.registry import ModelRef
from chatapp.settings import Settings, load_settings, parse_settings, render_settings, save_values
from model.inference.backend import collect_reply
from model.inference.sampling import SamplingParams
from model.text.chat_format import Message
from quant import kv_cache, worker_start
from quant.llama_engine import LlamaEngine
from quant.llama_worker import WorkerBackend
from tests.helpers.paths import BUILTIN_DIR

GGUF = BUILTIN_DIR / "shakespeare-chat-q8_0.gguf"
CONVERSATION = [Message("system", "You are Hamlet."), Message("user", "Good morrow, sweet lady; what news? " * 3)]
GREEDY = SamplingParams(temperature=0.0, max_tokens=3, seed=0)


@pytest.fixture
def session_cache():
    """The limits open_model uses are the process's; each test leaves them as it found them."""
    before = opening.session_cache()
    yield
    opening.set_session_cache(before)


def test_the_defaults_are_the_engines_own():
    default = CacheLimits()
    assert default.memory_mb * 2**20 == kv_cache.DEFAULT_MEMORY_BYTES
    assert default.disk_mb * 2**20 == kv_cache.DEFAULT_DISK_BYTES


def test_the_settings_file_has_the_limits_and_refuses_a_bad_one_with_a_notice(tmp_path):
    path = tmp_path / "settings.toml"
    path.write_text(render_settings(Settings()), encoding="utf-8")
    assert "[cache]\n" in path.read_text(encoding="utf-8") and load_settings(path).cache == CacheLimits(512, 2048)
    save_values(path, "cache", {"memory_mb": 64, "disk_mb": 0})
    assert load_settings(path).cache == CacheLimits(64, 0)
    settings = parse_settings({"cache": {"memory_mb": -5, "disk_mb": 1.5}})
    assert settings.cache == CacheLimits()
    assert settings.notices == [
        "settings.toml: cache.memory_mb = -5, but it must be a whole number of MB from 0 (none kept) to 1048576; "
        "using 512",
        "settings.toml: cache.disk_mb = 1.5, but it must be a whole number of MB from 0 (none kept) to 1048576; "
        "using 2048",
    ]
    assert parse_settings({"cache": {"memory_mb": True}}).notices  # a boolean is not a number of MB
    assert parse_settings({"cache": {"size": 1}}).notices == ["settings.toml: cache.size is not a setting; ignored"]


def test_the_worker_is_told_limits_other_than_the_default(monkeypatch, tmp_path, session_cache):
    monkeypatch.setenv("CHATAPP_HOME", str(tmp_path))
    assert not {"state_cache_mb", "state_disk_mb"} & set(llama_options(None, Threads()))  # the engine's own
    opening.set_session_cache(CacheLimits(64, 0))
    options = llama_options(None, Threads())
    assert (options["state_cache_mb"], options["state_disk_mb"]) == (64, 0)
    with pytest.raises(ValueError, match="cache disk_mb must be a whole number of MB"):
        opening.set_session_cache(CacheLimits(64, -1))


def chat(backend) -> None:
    reply = collect_reply(backend.chat(CONVERSATION, GREEDY))
    assert reply.finished is not None and reply.finished.prompt_tokens > 16


def test_limits_of_zero_keep_nothing_and_a_lowered_limit_empties_what_is_kept(tmp_path):
    states = tmp_path / "states"
    engine = LlamaEngine.load(GGUF, n_threads=1, state_cache_dir=states, state_cache_mb=0, state_disk_mb=0)
    try:
        chat(engine)
        assert engine.state_cache is None and not states.exists()
        engine.set_cache_limits(16, 64)
        engine.reset_cache()  # the next prefill computes everything, and then saves its state
        chat(engine)
        assert engine.state_cache is not None
        engine.state_cache.flush()
        assert engine.state_cache.memory and list(states.iterdir())
        engine.set_cache_limits(0, 0)
        assert not engine.state_cache.memory and not list(states.iterdir())
    finally:
        engine.close()


def test_a_worker_started_early_with_other_limits_is_taken_and_given_the_backends(tmp_path):
    states = tmp_path / "states"
    early = {"state_cache_dir": str(states), "n_threads": 1}  # the defaults: memory and disk
    worker_start.start_spare(str(tmp_path), str(GGUF), early)
    started = worker_start._spare[0].process
    backend = WorkerBackend(GGUF, log_dir=tmp_path, **early, state_disk_mb=0)
    try:
        assert backend._process is started  # taken, though its limits differed
        chat(backend)
    finally:
        backend.close()
    assert not states.exists() or not list(states.iterdir())  # disk_mb=0 reached the worker: nothing written


def test_a_worker_takes_new_limits_while_it_runs(tmp_path):
    states = tmp_path / "states"
    backend = WorkerBackend(GGUF, log_dir=tmp_path, state_cache_dir=str(states), n_threads=1)
    try:
        chat(backend)  # its state is written in the background
        collect_reply(backend.chat([Message("user", "Another conversation, long enough to be kept.")], GREEDY))
        assert list(states.iterdir())  # the first state's file (the next write waits for it)
        assert apply_cache_limits(backend, CacheLimits(8, 0))
        assert not list(states.iterdir())
        backend.close()
        assert backend.options["state_disk_mb"] == 0  # and a worker started again gets them
    finally:
        backend.close()


def test_the_torch_engine_keeps_what_the_memory_limit_allows(session_cache):
    opening.set_session_cache(CacheLimits(memory_mb=3, disk_mb=0))
    ref = ModelRef(name="shakespeare-chat", path=BUILTIN_DIR / "shakespeare-chat", kind="folder", source="built-in")
    engine = open_backend(ref, "torch", "cpu", compile="off", cache=opening.session_cache())
    try:
        assert engine.prompt_cache.max_bytes == 3 * 2**20
        chat(engine)
        kept = engine.prompt_cache.bytes
        assert 0 < kept <= 3 * 2**20
        assert apply_cache_limits(engine, CacheLimits(memory_mb=0))
        assert engine.prompt_cache.bytes == 0 and len(engine.prompt_cache) == 0
    finally:
        engine.close()
