"""Default thread counts (model/inference/threads.py) over model sizes and core counts."""

from __future__ import annotations

import pytest

from model.inference import threads

MB, GB = 1_000_000, 1_000_000_000
SIZES = [5 * MB, 23 * MB, 100 * MB, 250 * MB, 500 * MB, 1 * GB, 4 * GB, 10 * GB]
CORES = [1, 2, 8, 64]


def threads_for(monkeypatch, cores: int, model_bytes: int | None) -> tuple[int, int]:
    monkeypatch.setattr(threads, "available_cores", lambda: cores)
    return threads.default_threads(model_bytes)


@pytest.mark.parametrize("cores", CORES)
@pytest.mark.parametrize("model_bytes", SIZES + [None])
def test_between_one_and_the_available_cores(monkeypatch, cores, model_bytes):
    decode, prompt = threads_for(monkeypatch, cores, model_bytes)
    assert 1 <= decode <= prompt <= cores


@pytest.mark.parametrize("cores", CORES)
def test_more_weights_never_mean_fewer_threads(monkeypatch, cores):
    counts = [threads_for(monkeypatch, cores, size) for size in SIZES]
    assert counts == sorted(counts)


@pytest.mark.parametrize("cores", CORES)
def test_a_tiny_model_decodes_on_one_thread(monkeypatch, cores):
    assert threads_for(monkeypatch, cores, 5 * MB) == (1, 1)
    assert threads_for(monkeypatch, cores, 23 * MB) == (1, 1)


@pytest.mark.parametrize("cores, expected", [(1, (1, 1)), (2, (1, 2)), (4, (3, 4)), (8, (4, 8)), (64, (32, 64))])
def test_a_large_model_decodes_on_the_physical_cores_but_one_and_reads_prompts_on_all(monkeypatch, cores, expected):
    assert threads_for(monkeypatch, cores, 10 * GB) == expected
    assert threads_for(monkeypatch, cores, None) == expected


def test_mid_sized_models_grow_one_decode_thread_per_100_mb_and_one_prompt_thread_per_50_mb(monkeypatch):
    assert threads_for(monkeypatch, 64, 250 * MB) == (2, 5)
    assert threads_for(monkeypatch, 64, 1 * GB) == (10, 20)
    assert threads_for(monkeypatch, 8, 250 * MB) == (2, 5)
    assert threads_for(monkeypatch, 2, 250 * MB) == (1, 2)


@pytest.mark.parametrize("logical, physical", [(1, 1), (2, 2), (4, 4), (6, 4), (8, 4), (16, 8), (64, 32)])
def test_physical_cores_assume_two_smt_threads_per_core_past_four(logical, physical):
    assert threads.physical_cores(logical) == physical


def test_available_cores_follow_the_affinity_mask(monkeypatch):
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 3, 5}, raising=False)
    assert threads.available_cores() == 3


@pytest.mark.parametrize("cores", [2, 3, 4, 8, 64])
@pytest.mark.parametrize("model_bytes", SIZES + [None])
def test_decoding_leaves_a_core_free(monkeypatch, cores, model_bytes):
    """llama.cpp's decode threads spin-wait for each other: one that another process keeps off its core
    stalls the rest (2 cores, one busy: 2 threads fell far below what 1 thread kept)."""
    decode, _ = threads_for(monkeypatch, cores, model_bytes)
    assert decode <= cores - 1
