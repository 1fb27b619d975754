"""`chatapp serve --parallel N`: the server hands requests to a backend's slots. N run at once, the
queue still bounds the rest (503 + Retry-After past it), a client that leaves cancels its own reply
and nobody else's, and a reply is the same text however many others run beside it."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from contextlib import contextmanager
from types import SimpleNamespace

import httpx
import pytest

from chatapp.serving.endpoint import endpoint_spec
from chatapp.serving.parallel import default_parallel, open_parallel
from chatapp.serving.server import OpenAIServer, ServerOptions, parallel_note
from model.inference.backend import Finished, TextPiece
from tests.helpers.paths import ROOT

GGUF = ROOT / "chatapp" / "builtin" / "shakespeare-chat-q8_0.gguf"
FOLDER = ROOT / "chatapp" / "builtin" / "shakespeare-chat"
PROMPTS = ["Good morrow, my lord.", "What news from the court?", "Who goes there?", "Speak, I charge thee."]


class HeldReply:
    """One piece of text, then nothing until the test releases it or the server cancels it."""

    def __init__(self, release: threading.Event):
        self.release, self.cancelled, self.sent = release, threading.Event(), 0

    def __iter__(self):
        return self

    def __next__(self):
        self.sent += 1
        if self.sent == 1:
            return TextPiece("a")
        if self.sent == 2:
            while not (self.release.is_set() or self.cancelled.is_set()):
                self.cancelled.wait(0.01)
            reason = "cancelled" if self.cancelled.is_set() else "stop"
            return Finished(reason, 1, 1, 0.0, 0.0)
        raise StopIteration

    def cancel(self) -> None:
        self.cancelled.set()


class HeldSlots:
    """A backend with `slots` slots whose replies are HeldReply."""

    name = model_name = "held"
    context_length = trained_context_length = 512

    def __init__(self, slots: int):
        self.slots, self.release = slots, threading.Event()
        self.replies: list[HeldReply] = []

    def chat(self, messages, params):
        self.replies.append(HeldReply(self.release))
        return self.replies[-1]

    def cancel(self) -> None:
        raise AssertionError("a parallel backend's replies are cancelled one by one")


class FloodReply:
    """Text as fast as it can be made (64 KB a piece) until cancelled; then its end."""

    def __init__(self):
        self.cancelled, self.ended = threading.Event(), False

    def __iter__(self):
        return self

    def __next__(self):
        if self.ended:
            raise StopIteration
        if self.cancelled.is_set():
            self.ended = True
            return Finished("cancelled", 1, 1, 0.0, 0.0)
        return TextPiece("x" * 65536)

    def cancel(self) -> None:
        self.cancelled.set()


class FloodFirst(HeldSlots):
    """A backend whose first reply is a FloodReply and every later one a short reply, "a"."""

    def chat(self, messages, params):
        if self.replies:
            return iter([TextPiece("a"), Finished("stop", 1, 1, 0.0, 0.0)])
        self.replies.append(FloodReply())
        return self.replies[-1]


@contextmanager
def serving(backend, max_waiting: int = 16, **options):
    """(base URL, the server's Engine) for an OpenAIServer on a free loopback port."""
    import uvicorn

    routes = OpenAIServer(backend, ServerOptions(model_id="test-model", max_waiting=max_waiting, **options))
    server = uvicorn.Server(uvicorn.Config(routes.app(), host="127.0.0.1", port=0, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    until(lambda: server.started)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", routes.engine
    finally:
        server.should_exit = True
        thread.join(10)


def until(condition, limit_s: float = 30) -> None:
    """Wait for a condition another thread makes true (the limit only ends a test that hangs)."""
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, "waited in vain"
        time.sleep(0.01)


def body(text: str, **fields) -> dict:
    return {"messages": [{"role": "user", "content": text}], **fields}


class StreamingClient:
    """A streaming request on a raw socket, read in a thread until it ends or the test closes it."""

    def __init__(self, url: str):
        host, port = url.removeprefix("http://").split(":")
        payload = json.dumps(body("hi", stream=True)).encode()
        head = (
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
        )
        self.socket = socket.create_connection((host, int(port)), timeout=30)
        self.socket.sendall(head.encode() + payload)
        self.received = b""
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        with contextlib.suppress(OSError):
            while chunk := self.socket.recv(65536):
                self.received += chunk

    def leave(self) -> None:
        self.socket.shutdown(socket.SHUT_RDWR)
        self.socket.close()


def test_n_replies_run_at_once_the_queue_bounds_the_rest_and_a_client_that_leaves_cancels_only_its_own():
    backend = HeldSlots(slots=2)
    with serving(backend, max_waiting=1) as (url, engine):
        first, second = StreamingClient(url), StreamingClient(url)
        until(lambda: len(backend.replies) == 2 and all(reply.sent >= 1 for reply in backend.replies))
        waiting: dict = {}
        queued = threading.Thread(
            target=lambda: waiting.update(
                response=httpx.post(url + "/v1/chat/completions", json=body("hi"), timeout=30)
            )
        )
        queued.start()
        until(lambda: engine.waiting == 1)
        refused = httpx.post(url + "/v1/chat/completions", json=body("hi"), timeout=30)
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        first.leave()
        until(lambda: backend.replies[0].cancelled.is_set())
        until(lambda: len(backend.replies) == 3)  # the freed slot went to the queued request
        assert not backend.replies[1].cancelled.is_set()
        backend.release.set()
        queued.join(30)
        second.thread.join(30)
        assert waiting["response"].status_code == 200
        assert second.received.startswith(b"HTTP/1.1 200") and b"data: [DONE]" in second.received
        until(lambda: engine.waiting == 0 and not engine.lock.locked())


def test_a_client_that_stops_reading_is_cut_off_and_its_slot_goes_to_the_next():
    backend = FloodFirst(slots=1)
    with serving(backend, send_timeout_s=0.5) as (url, engine):
        host, port = url.removeprefix("http://").split(":")
        payload = json.dumps(body("hi", stream=True)).encode()
        head = (
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n"
        )
        stalled = socket.socket()
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect((host, int(port)))
        stalled.sendall(head.encode() + payload)  # and never reads
        try:
            until(lambda: backend.replies and backend.replies[0].cancelled.is_set())
            response = httpx.post(url + "/v1/chat/completions", json=body("hi"), timeout=30)
            assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"] == "a"
            until(lambda: engine.waiting == 0 and not engine.lock.locked())
        finally:
            stalled.close()


def chat_text(client: httpx.Client, url: str, text: str, **fields) -> str:
    response = client.post(url + "/v1/chat/completions", json=body(text, max_tokens=30, **fields))
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["message"]["content"]


def open_on_slots(kind: str, count: int):
    if kind == "torch":
        from model.inference.torch_slots import TorchSlotEngine

        return TorchSlotEngine.open(FOLDER, count, device="cpu")
    from quant.slot_engine import SlotEngine

    return SlotEngine.open(GGUF, count)


@pytest.mark.parametrize("kind", ["llama.cpp", "torch"])
def test_a_reply_at_temperature_0_is_the_same_alone_and_among_seven_concurrent_requests(kind):
    engine = open_on_slots(kind, 8)
    try:
        with serving(engine) as (url, _), httpx.Client(timeout=60) as client:
            alone = chat_text(client, url, PROMPTS[0], temperature=0)
            texts: dict[int, str] = {}

            def one(number: int) -> None:
                with httpx.Client(timeout=60) as own:
                    greedy = {"temperature": 0} if number == 0 else {"temperature": 0.9, "seed": number}
                    texts[number] = chat_text(own, url, PROMPTS[number % len(PROMPTS)], **greedy)

            threads = [threading.Thread(target=one, args=(number,)) for number in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
            assert len(texts) == 8 and texts[0] == alone
            assert engine.scheduler.busy_slots == 0
    finally:
        engine.close()


def test_the_default_slots_follow_the_model_size_and_the_cores():
    assert default_parallel(300_000_000, 16) == 4
    assert default_parallel(300_000_000, 2) == 2
    assert default_parallel(8_000_000_000, 16) == 2
    assert default_parallel(40_000_000_000, 16) == 1
    assert default_parallel(300_000_000, 1) == 1


def test_open_parallel_opens_slots_on_either_engine_and_leaves_everything_else_to_open_model():
    gguf = SimpleNamespace(kind="gguf", path=GGUF, size_bytes=GGUF.stat().st_size, name="built-in chat")
    folder = SimpleNamespace(kind="folder", path=FOLDER, size_bytes=1, name="shakespeare-chat")

    def never(spec):
        raise AssertionError("resolved a model it should not have")

    assert open_parallel("anything", never, parallel=1) is None
    assert open_parallel(endpoint_spec("http://localhost:8080/v1", "model"), never, parallel=None) is None
    assert open_parallel("built-in", lambda spec: gguf, backend="torch", parallel=None) is None
    with pytest.raises(ValueError, match="--parallel 2 runs a GGUF file on llama.cpp and a model folder on torch"):
        open_parallel("built-in", lambda spec: gguf, backend="torch", parallel=2)
    with pytest.raises(ValueError, match="--parallel must be"):
        open_parallel("x", never, parallel=0)
    on_torch = open_parallel("folder", lambda spec: folder, parallel=2, device="cpu")
    assert on_torch is not None
    engine, name = on_torch
    try:
        assert (name, engine.name, engine.slots, engine.context_length) == ("shakespeare-chat", "torch", 2, 256)
    finally:
        engine.close()
    opened = open_parallel("built-in", lambda spec: gguf, parallel=3)
    assert opened is not None
    engine, name = opened
    try:  # our own file keeps the context it was trained on, 256 tokens, in each slot
        assert (name, engine.slots, engine.context_length) == ("built-in chat", 3, 256)
        assert parallel_note(engine) == ", 3 parallel slots of 256 tokens"
    finally:
        engine.close()
