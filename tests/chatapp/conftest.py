"""Fixtures of the app's tests: a Hugging Face cache of the test's own (test_pull, the download screen)."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatapp.models import pull as pull_module


@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> Path:
    """The Hugging Face cache of these tests; no token, not offline, whatever this machine's settings."""
    import huggingface_hub.constants as constants

    cache = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    for variable in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf-home" / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "hf-home" / "stored_tokens"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(pull_module, "PROGRESS_EVERY_S", 0.0)  # every chunk's progress, however fast
    return cache
