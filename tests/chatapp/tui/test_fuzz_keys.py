"""The app driven by random key sequences (hypothesis, derandomized): typing, Enter, Esc, Ctrl+C, every key of
keys.APP_KEYS, resizes, pauses, and a history store that starts failing (a full disk, a failed write) at one
step and recovers at another. One fresh app and one fresh history file per example.

After each example: no exception escaped the app; every user message the store accepted is in the history
file (read back with a fresh connection), unless the user deleted it (F8, or an edit sent in its place); no
reply row is left "streaming" once the app quit (with the store working) or went idle; and, if the app still
runs, it still answers keys: a "ping" sent at the end is saved, shown and answered.

CHATAPP_FUZZ_EXAMPLES sets the number of examples (run with -s to see how many ran clean).
"""

from __future__ import annotations

import asyncio
import inspect
import os
import sqlite3
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from textual import events

from chatapp.history import HistoryFull, HistoryStore, HistoryWriteError, Status
from chatapp.settings import load_settings
from chatapp.tui.keys import APP_KEYS, NEWLINE_KEY
from chatapp.tui.widgets.messages import UserMessage
from tests.helpers.fake_backend import FakeBackend
from tests.helpers.tui_app import make_app, send, wait_until

EXAMPLES = int(os.environ.get("CHATAPP_FUZZ_EXAMPLES", "12"))
REAL_EXAMPLES = max(1, EXAMPLES // 3)
STEPS = 24

# Every write of HistoryStore: a full disk or a failed write raises from these.
WRITE_METHODS = (
    "create_conversation",
    "rename",
    "delete",
    "save_settings",
    "remember_open",
    "add_message",
    "update_content",
    "heartbeat",
    "reopen_message",
    "finish_message",
    "show_branch",
    "fork",
)

KEYS = sorted(
    {key for key, _, _, _ in APP_KEYS}
    | {"enter", "escape", "ctrl+c", "ctrl+n", "ctrl+r", "alt+up", "alt+down", "tab", "shift+tab"}
    | {"up", "down", "backspace", NEWLINE_KEY, "ctrl+p", "ctrl+q", "y"}
)
# Keys that arrive together (a fast typist, a terminal's burst): posted at once, as test_failures.py does
BURST_KEYS = ["enter", "ctrl+c", "escape", "ctrl+r", "ctrl+n", "alt+up", "alt+down", "ctrl+l", "ctrl+g", "f8", "y", "a"]
WORDS = ["hello", "y", "n", "why?", "a b", "ünï", "** x **", "```py\nx\n```", "q"]


class PacedBackend(FakeBackend):
    """The fake engine, with replies long enough (and paced) for Esc, Ctrl+C and other keys to land mid-reply;
    every other reply thinks first."""

    def __init__(self, pace_s: float = 0.01, **kwargs):
        super().__init__(**kwargs)
        self.pace_s = pace_s
        self.count = 0

    def next_reply(self):
        self.count += 1
        answer: list[str | tuple[str, str]] = [f"word{i} " for i in range(12)]
        if self.count % 3 == 0:  # a code block, for Shift+F9
            answer += ["\n```py\n", "x = 1\n", "```\n"]
        if self.count % 2:
            return [("thinking", "hmm "), ("thinking", "let me see ")] + answer
        return answer

    def _stream(self, pieces, params, inspect, messages):
        for event in super()._stream(pieces, params, inspect, messages):
            yield event
            time.sleep(self.pace_s)


class StoreFaults:
    """Wraps the store's writes: raises while `failure` is set; otherwise writes and keeps the oracle, the user
    messages the store accepted (id -> conversation, content) less those of conversations the user deleted."""

    def __init__(self, store: HistoryStore, mp: pytest.MonkeyPatch):
        self.store, self.path = store, Path(store.path)
        self.failure: str | None = None
        self.expected: dict[int, tuple[int, str]] = {}
        for name in WRITE_METHODS:
            mp.setattr(store, name, self.wrap(name, getattr(store, name)))

    def raise_failure(self) -> None:
        if self.failure == "full":
            raise HistoryFull("the disk is full (/fuzz): free some space and it is saved again", self.path)
        raise HistoryWriteError(f"saving to {self.path} failed (disk I/O error)", self.path)

    def wrap(self, name: str, real):
        signature = inspect.signature(real)

        def write(*args, **kwargs):
            if self.failure is not None:
                self.raise_failure()
            bound = signature.bind(*args, **kwargs).arguments
            result = real(*args, **kwargs)
            if name == "add_message" and bound["role"] == "user":
                self.expected[result.id] = (bound["conversation_id"], bound["content"])
            elif name == "delete":
                self.expected = {k: v for k, v in self.expected.items() if v[0] != bound["conversation_id"]}
            return result

        return write


class read_only:
    def __init__(self, path: Path):
        self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)

    def __enter__(self) -> sqlite3.Connection:
        return self.db

    def __exit__(self, *exc) -> None:
        self.db.close()


# --- the actions ---

texts = st.one_of(st.sampled_from(WORDS), st.text(alphabet="abcxyz 19!?", min_size=1, max_size=6))
actions = st.one_of(
    st.tuples(st.just("send"), texts),  # typed, then Enter
    st.tuples(st.just("send"), texts),
    st.tuples(st.just("type"), texts),
    st.tuples(st.just("key"), st.sampled_from(["enter", "enter", "escape", "ctrl+c"])),
    st.tuples(st.just("key"), st.sampled_from(KEYS)),
    st.tuples(st.just("key"), st.sampled_from(KEYS)),
    st.tuples(st.just("key"), st.sampled_from(KEYS)),
    st.tuples(st.just("burst"), st.lists(st.sampled_from(BURST_KEYS), min_size=2, max_size=4)),
    st.tuples(st.just("resize"), st.tuples(st.integers(30, 160), st.integers(8, 50))),
    st.tuples(st.just("pause"), st.sampled_from([0.0, 0.02, 0.1, 0.3])),
    st.tuples(st.just("store"), st.sampled_from(["full", "write", "recover"])),
)
scripts = st.lists(actions, min_size=3, max_size=STEPS)


def stopped(app) -> bool:
    return app.return_code is not None or not app.is_running


async def act(pilot, faults: StoreFaults, action: tuple) -> None:
    kind, value = action
    if kind in ("type", "send"):
        keys = [NEWLINE_KEY if c == "\n" else "space" if c == " " else c for c in value]
        await pilot.press(*keys, *(["enter"] if kind == "send" else []))
    elif kind == "key":
        await pilot.press(value)
    elif kind == "burst":
        for key in value:
            pilot.app.post_message(events.Key(key, key if len(key) == 1 else "\r" if key == "enter" else None))
        await pilot.pause()
    elif kind == "resize":
        await pilot.resize_terminal(*value)
    elif kind == "pause":
        await pilot.pause(value)
    elif kind == "store":
        faults.failure = None if value == "recover" else value


async def still_answers(pilot, faults: StoreFaults) -> None:
    """With the store working again: dialogs closed, the reply over, its row saved; then a ping is saved,
    shown and answered."""
    app = pilot.app
    faults.failure = None
    for _ in range(8):
        if app.screen is app.chat or stopped(app):
            break
        await pilot.press("escape")
        await pilot.pause(0.05)
    if stopped(app):
        return
    assert app.screen is app.chat, f"Esc did not close {type(app.screen).__name__}"
    await wait_until(pilot, lambda: app.chat.job is None, timeout=30, what="the reply to end")
    await wait_until(pilot, lambda: app.engine is not None, timeout=30, what="the model to load")
    await wait_until(pilot, lambda: not app.chat.unsaved, timeout=30, what="the unsaved replies to be saved")
    await send(pilot, "ping")
    conversation = app.chat.current.id

    def pinged() -> bool:
        rows = app.store.messages(conversation)
        return (
            app.chat.job is None
            and len(rows) >= 2
            and (rows[-2].role, rows[-2].content) == ("user", "ping")
            and rows[-1].role == "assistant"
            and rows[-1].status != Status.STREAMING
        )

    await wait_until(pilot, pinged, timeout=60, what="the ping to be saved and answered")
    shown = list(app.chat.query(UserMessage))
    assert shown and shown[-1].content == "ping", [w.content for w in shown]
    saved = {m.id: m.content for m in app.store.messages(conversation)}
    for widget in shown:  # what the screen shows as sent is what the history holds
        assert saved.get(widget.message_id) == widget.content, (widget.message_id, widget.content, saved)


def check_history(faults: StoreFaults, may_stream: bool) -> None:
    with read_only(faults.path) as db:
        rows = {row[0]: row[1:] for row in db.execute("SELECT id, conversation_id, role, content FROM messages")}
        streaming = [row[0] for row in db.execute("SELECT id FROM messages WHERE status = ?", (Status.STREAMING,))]
    for message_id, (conversation_id, content) in faults.expected.items():
        assert rows.get(message_id) == (conversation_id, "user", content), f"user message {message_id} lost"
    if not may_stream:
        assert not streaming, f"reply rows left streaming: {streaming}"
    fresh = HistoryStore(faults.path)  # the file opens again, every accepted message in its conversation
    try:
        for message_id, (conversation_id, content) in faults.expected.items():
            assert content in [m.content for m in fresh.every_branch(conversation_id) if m.id == message_id]
    finally:
        fresh.close()


async def run_example(script: list[tuple], engine_factory, max_tokens: int | None) -> dict:
    """One example; returns what it did (steps run, whether it quit, user messages checked, store failures)."""
    with tempfile.TemporaryDirectory() as home, pytest.MonkeyPatch.context() as mp:
        mp.setenv("CHATAPP_HOME", home)
        mp.setattr("chatapp.tui.screens.chat.SAVE_RETRY_S", 0.1)
        store = HistoryStore(Path(home) / "history.sqlite3")
        faults = StoreFaults(store, mp)
        app_settings = load_settings()
        if max_tokens is not None:
            app_settings.chat = replace(app_settings.chat, max_tokens=max_tokens)
        app = make_app(
            engine_factory(None),
            store=store,
            settings=app_settings,
            opener=lambda spec, backend, device: engine_factory(spec),
        )
        failure_at_exit: list[str | None] = []  # the store's state when the app quit (its last saves are just before)
        exit_app = app.exit

        def exit_noting_the_store(*args, **kwargs):
            failure_at_exit.append(faults.failure)
            return exit_app(*args, **kwargs)

        mp.setattr(app, "exit", exit_noting_the_store)
        quit_by_key, steps = False, 0
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.pause()
            for action in script:
                if stopped(app):
                    break
                await act(pilot, faults, action)
                steps += 1
                quit_by_key = stopped(app)
            if not stopped(app):
                await still_answers(pilot, faults)
        assert app._exception is None, app._exception
        assert app.return_code in (None, 0), app.return_code
        faults.failure = None
        store.close()
        check_history(faults, may_stream=any(failure is not None for failure in failure_at_exit))
        return {
            "steps": steps,
            "quit": quit_by_key,
            "messages": len(faults.expected),
            "failures": sum(kind == "store" and value != "recover" for kind, value in script[:steps]),
        }


def fuzz(engine_factory, max_tokens: int | None, examples: int) -> list[dict]:
    """Runs the examples; returns what each clean one did."""
    clean: list[dict] = []

    @settings(
        derandomize=True,
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(scripts)
    def run(script):
        clean.append(asyncio.run(run_example(script, engine_factory, max_tokens)))

    run()
    return clean


def report(engine: str, clean: list[dict], started: float) -> None:
    print(
        f"\nfuzz ({engine}): {len(clean)} examples ran clean in {time.monotonic() - started:.1f}s: "
        f"{sum(c['steps'] for c in clean)} steps, {sum(c['quit'] for c in clean)} quit by a key, "
        f"{sum(c['messages'] for c in clean)} user messages checked in the history, "
        f"{sum(c['failures'] for c in clean)} store failures started"
    )


def test_random_keys_on_the_fake_engine_keep_the_app_and_the_history():
    started = time.monotonic()
    clean = fuzz(lambda spec: PacedBackend(model_name=spec or "fake-model"), None, EXAMPLES)
    report("fake engine", clean, started)
    assert clean


@pytest.fixture(scope="module")
def tiny_engine(tiny_model_dir):
    from model.inference.torch_engine import TorchEngine

    return TorchEngine.load(tiny_model_dir, device="cpu")


@pytest.mark.slow
def test_random_keys_on_the_real_tiny_engine_keep_the_app_and_the_history(tiny_engine):
    started = time.monotonic()
    clean = fuzz(lambda spec: tiny_engine, 24, REAL_EXAMPLES)
    report("tiny torch engine", clean, started)
    assert clean


# --- what the fuzzing found ---


@pytest.mark.asyncio
@pytest.mark.parametrize("width", [27, 28, 12])
async def test_a_terminal_too_narrow_for_the_input_beside_the_sidebar_does_not_end_the_app(width):
    """With the sidebar shown, 27 or 28 columns left the empty input's placeholder zero columns, and Textual's
    TextArea failed the app (ValueError from rich's chop_cells); the input keeps a few columns now."""
    app = make_app(PacedBackend())
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        await pilot.resize_terminal(width, 20)
        await pilot.pause()
        assert app.chat.prompt.content_size.width > 0
        await pilot.resize_terminal(100, 30)
        await send(pilot, "still here?")
        await wait_until(pilot, lambda: app.chat.job is None and len(app.store.messages(app.chat.current.id)) == 2)
    assert app._exception is None
