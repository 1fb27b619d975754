"""A history or settings write that fails (a full disk, a file gone) is said in one line and the app goes on:
what the user was doing stays on screen.

Textual ends the app on any exception a handler lets out, so the places where these can arise catch them:
every action through ChatApp.run_action, message handlers and timers with @notifies_failures, dialog
callbacks with `with failures_as_notices(screen):`. The reply thread catches its own (generation.py).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from typing import Any, TypeVar, cast

from textual.app import App
from textual.widget import Widget

from chatapp.history import HistoryError
from chatapp.settings import SettingsError

SAVE_ERRORS = (HistoryError, SettingsError)
NOTICE_S = 15

Handler = TypeVar("Handler", bound=Callable[..., Any])
Node = Widget | App[Any]  # what can show a notice


def failure_text(error: BaseException) -> str:
    """The error in one line: a HistoryError's reason says what happened and what to do."""
    text = getattr(error, "reason", None) or str(error) or type(error).__name__
    return text.strip().splitlines()[0]


@contextmanager
def failures_as_notices(node: Node) -> Iterator[None]:
    """Run the block; a failed history or settings write in it becomes a notice."""
    try:
        yield
    except SAVE_ERRORS as error:
        node.notify(failure_text(error), severity="error", timeout=NOTICE_S)


def notifies_failures(handler: Handler) -> Handler:
    """A handler method (sync or async) whose failed history or settings write becomes a notice; it then
    returns None. Its signature is kept: Textual counts a handler's parameters."""
    if inspect.iscoroutinefunction(handler):

        @wraps(handler)
        async def guarded_coroutine(self: Node, *args: Any, **kwargs: Any) -> Any:
            with failures_as_notices(self):
                return await handler(self, *args, **kwargs)
            return None

        return cast(Handler, guarded_coroutine)

    @wraps(handler)
    def guarded(self: Node, *args: Any, **kwargs: Any) -> Any:
        with failures_as_notices(self):
            return handler(self, *args, **kwargs)
        return None

    return cast(Handler, guarded)
