"""The GGUF tests run on the tiny model and on the shipped one, when it is present."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.gguf_exports import BUILTIN_MODEL, MODEL_PARAMS


@pytest.fixture(scope="session", params=MODEL_PARAMS)
def quant_model_dir(request, tiny_model_dir) -> Path:
    """The tiny model, and the shipped one when it is present."""
    return tiny_model_dir if request.param == "tiny" else BUILTIN_MODEL
