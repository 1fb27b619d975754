"""kill -9 mid-reply: the next start shows every earlier message and the partial reply, marked interrupted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from chatapp.history import HistoryStore
from chatapp.tui.widgets.messages import AssistantMessage
from tests.helpers.paths import ROOT  # noqa: E402
from tests.helpers.tui_app import make_app

CHILD = """
import asyncio
from chatapp.history import HistoryStore
from chatapp.tui.app import ChatApp
from tests.helpers.fake_backend import FakeBackend

async def main():
    engine = FakeBackend(replies=[["Well met."], ["partial", " reply", " never", " finished"]], hold_after=2)
    store = HistoryStore()
    app = ChatApp(engine=engine, store=store)
    async with app.run_test() as pilot:
        for text in ("first question", "second question"):
            app.chat.prompt.text = text
            await pilot.press("enter")
            while app.chat.job is not None and not engine.holding.is_set():
                await pilot.pause(0.01)
        while not store.messages(app.chat.conversation.id)[-1].content:
            await pilot.pause(0.01)
        print("STREAMING", flush=True)
        await asyncio.sleep(3600)

asyncio.run(main())
"""


@pytest.mark.slow
async def test_a_reply_survives_kill_minus_nine(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        line = child.stdout.readline()
        assert line.strip() == "STREAMING", child.stderr.read()
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
    store = HistoryStore()
    conversation = store.conversations()[0]
    messages = store.messages(conversation.id)
    assert [(m.role, m.content) for m in messages[:3]] == [
        ("user", "first question"),
        ("assistant", "Well met."),
        ("user", "second question"),
    ]
    assert messages[3].content in ("partial", "partial reply") and messages[3].status == "interrupted"
    assert store.recovered == 1

    app = make_app(store=HistoryStore())
    async with app.run_test() as pilot:
        await pilot.pause()
        replies = list(app.query(AssistantMessage))
        assert [r.content for r in replies][0] == "Well met."
        assert replies[-1].status == "interrupted" and "interrupted" in replies[-1].footer_text()
        assert replies[-1].has_class("unfinished")


pytestmark = pytest.mark.asyncio
