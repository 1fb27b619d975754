"""The TUI starts its llama.cpp workers ahead of need: for a GGUF file it opens first, one forked when the app
is made and told to load the file while Textual starts; after each model is ready, a spare that the next
model switch (F4) takes, with llama.cpp already imported."""

from __future__ import annotations

import pytest

from chatapp.history import HistoryStore
from chatapp.tui.app import ChatApp
from quant import worker_start
from tests.helpers.paths import BUILTIN_DIR
from tests.helpers.tui_app import wait_until

pytestmark = pytest.mark.asyncio

GGUF = str(BUILTIN_DIR / "shakespeare-chat-q8_0.gguf")


@pytest.fixture(autouse=True)
def no_spare_left():
    worker_start.discard_spare()
    yield
    worker_start.discard_spare()


def spare_process():
    return worker_start._spare[0].process if worker_start._spare else None


async def test_the_first_model_and_the_next_switch_take_workers_started_ahead():
    app = ChatApp(GGUF, store=HistoryStore(":memory:"))
    first = spare_process()
    assert first is not None  # forked as the app was made, before its first frame
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: app.engine is not None, timeout=60, what="the model to load")
        assert app.engine._process is first
        await wait_until(pilot, lambda: spare_process() is not None, timeout=60, what="a spare for the next switch")
        second = spare_process()
        assert second is not first
        app.start_loading(GGUF, "auto")  # what an F4 choice does
        await wait_until(pilot, lambda: app.engine is not None, timeout=60, what="the switch")
        assert app.engine._process is second
        app.engine.close()
