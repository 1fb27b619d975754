"""Shared by every test: each its own CHATAPP_HOME, a tiny model trained on the
real corpus once per session, and the shipped model when it is present. The
tests in tests/system/ are marked `system`; `pytest -m "not system and not slow"`
is the fast loop."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# No background torch.compile in the tests (each test has its own cache: every one would compile
# from scratch, tens of CPU seconds); the tests of the compiled step ask for it with compile="on".
os.environ["CHATAPP_COMPILE"] = "off"
BUILTIN_MODEL = ROOT / "chatapp" / "builtin" / "shakespeare-base"


SYSTEM_TESTS = ROOT / "tests" / "system"


def pytest_collection_modifyitems(items) -> None:
    for item in items:
        if SYSTEM_TESTS in item.path.parents:
            item.add_marker(pytest.mark.system)


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    """Every test gets its own CHATAPP_HOME: no test touches the user's data."""
    monkeypatch.setenv("CHATAPP_HOME", str(tmp_path / "chatapp-home"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from model.training.train import TrainOptions, train

    out = tmp_path_factory.mktemp("models") / "tiny"
    os.environ.setdefault("CHATAPP_HOME", str(out.parent / "home"))
    train(TrainOptions(out=str(out), preset="tiny", steps=10, seed=7), log=lambda line: None)
    return out


def model_dirs_for_tests(tiny: Path) -> list[Path]:
    return [tiny] + ([BUILTIN_MODEL] if BUILTIN_MODEL.is_dir() else [])


@pytest.fixture(scope="session", params=["tiny", "shipped"])
def any_model_dir(request, tiny_model_dir) -> Path:
    """The tiny model and the shipped one: the engine tests run on both."""
    if request.param == "tiny":
        return tiny_model_dir
    if not BUILTIN_MODEL.is_dir():
        pytest.fail(f"the shipped model is missing: {BUILTIN_MODEL}")
    return BUILTIN_MODEL
