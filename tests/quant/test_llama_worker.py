"""llama.cpp in its worker process: a worker that dies (a native abort) is one line
of error for the CLI and the TUI, the app keeps running, and the next request
starts a new worker. The aborts here are real: SIGABRT sent to the worker."""

from __future__ import annotations

import os
import signal

import pytest

from model.inference.backend import EngineCrashed, Finished, TextPiece
from model.inference.sampling import SamplingParams
from tests.helpers.gguf_exports import exported
from tests.helpers.tui_app import make_app, reply_texts, send, wait_idle


@pytest.fixture()
def gguf(tiny_model_dir):
    return exported(tiny_model_dir, "q8_0")[0]


def test_a_worker_killed_mid_reply_is_one_line_and_the_next_request_starts_a_new_one(gguf):
    from quant.llama_worker import WorkerBackend

    backend = WorkerBackend.load(gguf)
    try:
        events = backend.complete("The king", SamplingParams(max_tokens=200, seed=1))
        first_pid = backend._process.pid
        with pytest.raises(EngineCrashed) as crash:
            for event in events:
                if isinstance(event, TextPiece) and event.token_ids:
                    os.kill(first_pid, signal.SIGABRT)
        message = str(crash.value)
        assert "\n" not in message and "SIGABRT" in message and gguf.name in message
        finished = [
            e for e in backend.complete("The king", SamplingParams(max_tokens=5, seed=1)) if isinstance(e, Finished)
        ]
        assert finished[0].completion_tokens == 5 and backend._process.pid != first_pid
    finally:
        backend.close()


def test_the_worker_keeps_llama_cpp_off_the_terminal(gguf, capfd, tmp_path):
    from quant.llama_worker import WorkerBackend

    backend = WorkerBackend.load(gguf)
    list(backend.complete("Hark", SamplingParams(max_tokens=5, seed=1)))
    os.kill(backend._process.pid, signal.SIGABRT)
    with pytest.raises(EngineCrashed):
        list(backend.complete("Hark", SamplingParams(max_tokens=5, seed=1)))
    backend.close()
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    assert backend.log_path == tmp_path / "chatapp-home" / "data" / "logs" / "llama-worker.log"


@pytest.mark.asyncio
async def test_the_app_survives_a_crashed_engine_and_answers_again(gguf):
    from quant.llama_worker import WorkerBackend

    class AbortsOnce(WorkerBackend):
        """Its worker is killed right after the first reply starts."""

        killed = False

        def _events(self, on_inspect, started):
            if not self.killed:
                self.killed = True
                os.kill(self._process.pid, signal.SIGABRT)
            yield from super()._events(on_inspect, started)

    backend = AbortsOnce(gguf)
    app = make_app(backend)
    try:
        async with app.run_test() as pilot:
            await send(pilot, "Good morrow")
            await wait_idle(pilot)
            failed = app.store.messages(app.chat.conversation.id)[-1]
            assert failed.status == "error" and "SIGABRT" in failed.error and "\n" not in failed.error
            await send(pilot, "Good morrow again")
            await wait_idle(pilot)
            stored = app.store.messages(app.chat.conversation.id)
            assert stored[-1].status in ("complete", "length") and stored[-1].content
            assert reply_texts(app)[-1] == stored[-1].content
            assert app.is_running
    finally:
        backend.close()


def test_fit_in_the_worker_renders_with_the_replys_thinking_switch(tmp_path):
    """fit() takes the reply's sampling parameters across the process boundary: Qwen3's prompt with
    thinking off carries an empty think block, and a fit without them keeps the last ones."""
    from model.text.chat_format import Message
    from quant.llama_worker import WorkerBackend
    from tests.helpers.foreign_gguf import write_foreign_gguf

    backend = WorkerBackend.load(write_foreign_gguf(tmp_path / "qwen3.gguf", "qwen3"))
    try:
        messages = [Message("user", "hi")]
        default = backend.fit(messages, 16, params=SamplingParams())
        off = backend.fit(messages, 16, params=SamplingParams(thinking=False))
        assert off.size > default.size
        assert backend.fit(messages, 16).size == off.size  # no params: the last ones stay
    finally:
        backend.close()
