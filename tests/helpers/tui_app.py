"""Shared helpers for the TUI tests: an app on the fake engine and a condition wait."""

from __future__ import annotations

import time

from chatapp.history import HistoryStore
from chatapp.tui.app import ChatApp
from tests.helpers.fake_backend import FakeBackend


def make_app(engine=None, store=None, **kwargs) -> ChatApp:
    return ChatApp(engine=engine if engine is not None else FakeBackend(), store=store or HistoryStore(), **kwargs)


async def wait_until(pilot, condition, timeout: float = 10.0, what: str = "the condition") -> None:
    """Let the app run until condition() holds; no fixed sleeps."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.01)


async def send(pilot, text: str) -> None:
    app = pilot.app
    app.chat.prompt.focus()
    app.chat.prompt.text = text
    await pilot.press("enter")


async def wait_idle(pilot) -> None:
    await wait_until(pilot, lambda: pilot.app.chat.job is None, what="the reply to finish")
    await pilot.pause()


def reply_texts(app) -> list[str]:
    from chatapp.tui.widgets.messages import AssistantMessage

    return [w.content for w in app.query(AssistantMessage)]


def notices(app) -> list[str]:
    """The messages of the notices (toasts) the app has shown and still shows."""
    return [n.message for n in app._notifications]
