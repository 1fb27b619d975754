"""Where user data lives: platformdirs, or everything under $CHATAPP_HOME."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP_NAME = "chatapp"


def _home() -> Path | None:
    home = os.environ.get("CHATAPP_HOME")
    return Path(home).expanduser() if home else None


def data_dir() -> Path:
    home = _home()
    return home / "data" if home else Path(platformdirs.user_data_dir(APP_NAME))


def config_dir() -> Path:
    home = _home()
    return home / "config" if home else Path(platformdirs.user_config_dir(APP_NAME))


def cache_dir() -> Path:
    home = _home()
    return home / "cache" if home else Path(platformdirs.user_cache_dir(APP_NAME))


def compile_cache_dir() -> Path:
    """torch.compile's kernels, kept so that a second start loads instead of compiling."""
    return cache_dir() / "torch-compile"


def user_models_dir() -> Path:
    return data_dir() / "models"


def log_dir() -> Path:
    return data_dir() / "logs"
