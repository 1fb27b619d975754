"""`chatapp serve`'s guards, on a scripted engine: the engine's turn can never be kept by a failed or
abandoned request; bodies are checked against declared models (400, never 500); only JSON bodies,
only Host headers naming this server, the key compared in constant time, CORS refusals and body
limits in OpenAI's error shape; work whose client left is cancelled or never started. Loopback
only; every wait is bounded."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import threading
import time

import httpx
import pytest

from chatapp.serving import server as server_module
from chatapp.serving.server import Engine, HostRule, ServerOptions, create_app, split_host
from model.inference.backend import EngineCrashed
from model.inference.sampling import SamplingParams
from model.text.chat_format import Message
from tests.helpers.fake_backend import FakeBackend
from tests.helpers.served import running

CHAT, COMPLETIONS = "/v1/chat/completions", "/v1/completions"
HI = {"messages": [{"role": "user", "content": "hi"}]}
ERROR_KEYS = {"message", "type", "param", "code"}


def assert_openai_error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == ERROR_KEYS and isinstance(error["message"], str) and error["message"]
    assert "Traceback" not in response.text
    return error


def assert_served(url: str, timeout: float = 3.0) -> None:
    """A plain request is answered at once: nothing holds the engine."""
    response = httpx.post(url + CHAT, json=HI, timeout=timeout)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "Hello there, friend."


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def wait_until(condition, seconds: float = 10.0, what: str = "the condition") -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


# --- 1. the engine's turn: nothing between taking and giving it back can keep it ---


@pytest.mark.parametrize("path", [CHAT, COMPLETIONS])
@pytest.mark.parametrize("stream_options", ["x", [1], 1, True])
def test_a_bad_stream_options_is_a_400_and_the_engine_stays_free(path, stream_options):
    body = {**HI, "prompt": "hi", "stream": True, "stream_options": stream_options}
    with running(FakeBackend()) as url:
        for _ in range(2):  # before the fix: a 500 after the lock was taken, then every request hung
            error = assert_openai_error(httpx.post(url + path, json=body, timeout=3), 400)
            assert error["param"] == "stream_options"
        assert_served(url)


def test_the_curl_that_wedged_the_server_is_refused_and_the_engine_stays_free():
    body = b'{"messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":"x"}'
    with running(FakeBackend()) as url:
        response = httpx.post(url + CHAT, content=body, headers={"Content-Type": "text/plain"}, timeout=3)
        assert assert_openai_error(response, 415)["code"] == "unsupported_media_type"
        assert_served(url)


def asgi_scope(path: str, body: bytes) -> dict:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
    }


async def call_app(app, body: dict, leave_on_receive: int | None) -> list[dict]:
    """One request straight through the ASGI app; the client is gone from the given receive() call on
    (None: it stays until the response is complete). Returns what the app sent."""
    raw, calls, sent = json.dumps(body).encode(), 0, []
    done = asyncio.Event()

    async def receive() -> dict:
        nonlocal calls
        calls += 1
        if calls == 1:
            return {"type": "http.request", "body": raw, "more_body": False}
        if leave_on_receive is None or calls < leave_on_receive:
            await done.wait()  # still connected: nothing more comes until the response is complete
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            done.set()

    await asyncio.wait_for(app(asgi_scope(CHAT, raw), receive, send), 5)
    return sent


@pytest.mark.parametrize("leave_on_receive", [2, 3], ids=["gone-when-its-turn-comes", "gone-before-the-first-chunk"])
def test_a_stream_whose_client_left_before_its_first_chunk_frees_the_engine(leave_on_receive):
    """receive() #2 is the queue's watch for the client; #3 is the stream's own. Either way the
    stream's generator never starts, so only a turn owned outside it is given back."""
    engine = FakeBackend()
    app = create_app(engine, ServerOptions(model_id="test-model"))

    async def scenario() -> list[dict]:
        await call_app(app, {**HI, "stream": True}, leave_on_receive)
        return await call_app(app, HI, None)  # the engine is free: a plain request is answered

    sent = asyncio.run(scenario())
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 200
    assert json.loads(b"".join(m.get("body", b"") for m in sent[1:]))["choices"][0]["message"]["content"]
    if leave_on_receive == 2:  # gone before its turn: never started
        assert len(engine.calls) == 1


class FailsToStart(FakeBackend):
    """An engine whose worker died: chat() raises before any event (once)."""

    failures = 1

    def chat(self, *args, **kwargs):
        if self.failures:
            self.failures -= 1
            raise EngineCrashed("the llama.cpp worker stopped (exit code -6)")
        return super().chat(*args, **kwargs)


def test_an_engine_that_fails_to_start_or_mid_reply_is_a_500_and_the_engine_stays_free():
    with running(FailsToStart()) as url:
        error = assert_openai_error(httpx.post(url + CHAT, json=HI, timeout=3), 500)
        assert error["message"] == "the engine failed: the llama.cpp worker stopped (exit code -6)"
        assert_served(url)
    engine = FakeBackend(fail_after=1)
    with running(engine) as url:
        assert "broke down" in assert_openai_error(httpx.post(url + CHAT, json=HI, timeout=3), 500)["message"]
        engine.fail_after = None
        assert_served(url)


async def never_gone() -> None:
    await asyncio.Event().wait()


def test_a_request_cancelled_while_its_generation_starts_still_stops_what_started():
    backend, started, proceed = FakeBackend(), threading.Event(), threading.Event()
    engine = Engine(backend, max_waiting=4)

    def slow_start():
        started.set()
        proceed.wait(5)
        return backend.chat([Message("user", "hi")], SamplingParams(max_tokens=4))

    async def request() -> None:
        async with engine.turn(never_gone), engine.generation(slow_start):
            raise AssertionError("a cancelled request went on")

    async def scenario() -> None:
        task = asyncio.ensure_future(request())
        await asyncio.to_thread(started.wait, 5)
        task.cancel()
        await asyncio.sleep(0.05)
        assert not task.done()  # a start in a thread cannot be abandoned halfway
        proceed.set()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 5)
        assert not engine.lock.locked() and engine.waiting == 0
        assert backend.cancelled == 1  # what had started was stopped

    asyncio.run(scenario())


def test_a_request_cancelled_in_the_queue_leaves_the_turn_alone():
    engine = Engine(FakeBackend(), max_waiting=4)

    async def wait_for_turn() -> None:
        async with engine.turn(never_gone):
            raise AssertionError("a cancelled request got the engine")

    async def scenario() -> None:
        async with engine.turn(never_gone):
            waiter = asyncio.ensure_future(wait_for_turn())
            await asyncio.sleep(0.02)
            assert engine.waiting == 1
            waiter.cancel()
            await asyncio.gather(waiter, return_exceptions=True)
            assert engine.waiting == 0 and engine.lock.locked()  # still ours
        assert not engine.lock.locked()
        async with engine.turn(never_gone):
            pass

    asyncio.run(asyncio.wait_for(scenario(), 5))


# --- 3. bodies validated by declared models: 400 in OpenAI's shape, never 500 ---

HUGE = 10**400
BAD_BODIES = {
    "temperature-400-digits": {**HI, "temperature": HUGE},
    "top_p-400-digits": {**HI, "top_p": HUGE},
    "temperature-string": {**HI, "temperature": "0.5"},
    "temperature-bool": {**HI, "temperature": True},
    "top_k-float": {**HI, "top_k": 1.5},
    "max_tokens-string": {**HI, "max_tokens": "5"},
    "seed-too-big": {**HI, "seed": 2**64},
    "role-list": {"messages": [{"role": ["user"], "content": "hi"}]},
    "role-dict": {"messages": [{"role": {"user": 1}, "content": "hi"}]},
    "role-unknown": {"messages": [{"role": "wizard", "content": "hi"}]},
    "model-list": {**HI, "model": ["test-model"]},
    "model-dict": {**HI, "model": {"a": 1}},
    "messages-missing": {},
    "messages-empty": {"messages": []},
    "messages-string": {"messages": "hi"},
    "message-a-string": {"messages": ["hi"]},
    "content-number": {"messages": [{"role": "user", "content": 5}]},
    "content-list-of-strings": {"messages": [{"role": "user", "content": ["hi"]}]},
    "content-image": {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
    "stop-number": {**HI, "stop": 5},
    "stop-too-many": {**HI, "stop": ["x"] * 17},
    "stop-list-of-numbers": {**HI, "stop": [1, 2]},
    "n-2": {**HI, "n": 2},
    "n-string": {**HI, "n": "1"},
    "stream-string": {**HI, "stream": "yes"},
    "stream_options-include_usage-string": {**HI, "stream": True, "stream_options": {"include_usage": "yes"}},
}
BAD_RAW = {
    "nested-10k-deep": b'{"messages": ' + b"[" * 10_000 + b"]" * 10_000 + b"}",
    "nested-10k-deep-in-an-unknown-key": b'{"messages": [], "x": ' + b'{"a":' * 10_000 + b"1" + b"}" * 10_000 + b"}",
    "not-json": b"{not json",
    "invalid-utf8": b'{"messages": [{"role": "user", "content": "\xff"}]}',
    "lone-surrogate": b'{"messages": [{"role": "user", "content": "\\ud800"}]}',
    "nan": b'{"messages": [{"role": "user", "content": "hi"}], "temperature": NaN}',
    "1e400": b'{"messages": [{"role": "user", "content": "hi"}], "temperature": 1e400}',
    "null": b"null",
    "a-list": b"[1, 2]",
    "a-string": b'"hi"',
    "empty": b"",
    "trailing-garbage": b'{"messages": [{"role": "user", "content": "hi"}]}}',
}


@pytest.fixture(scope="module")
def fake_url():
    with running(FakeBackend()) as url:
        yield url


@pytest.mark.parametrize("name", list(BAD_BODIES) + list(BAD_RAW))
def test_a_wrong_body_is_a_400_in_openai_shape_never_a_500(fake_url, name):
    raw = BAD_RAW[name] if name in BAD_RAW else json.dumps(BAD_BODIES[name]).encode()
    response = httpx.post(fake_url + CHAT, content=raw, headers={"Content-Type": "application/json"}, timeout=5)
    error = assert_openai_error(response, 400)
    assert len(error["message"]) < 400  # no echo of a huge input
    assert_served(fake_url)


@pytest.mark.parametrize(
    "body", [{"prompt": 5}, {"prompt": ["a", "b"]}, {}, {"prompt": [1, 2]}, {"prompt": "x", "top_p": HUGE}]
)
def test_a_wrong_completion_body_is_a_400(fake_url, body):
    assert_openai_error(httpx.post(fake_url + COMPLETIONS, json=body, timeout=5), 400)


def test_the_error_messages_name_the_rule_and_where():
    with running(FakeBackend()) as url:

        def error(body):
            return assert_openai_error(httpx.post(url + CHAT, json=body, timeout=5), 400)

        assert error({"messages": []})["message"] == "messages must be a non-empty list"
        assert error({**HI, "n": 2})["message"].startswith("n must be 1")
        assert error({"messages": [{"role": "wizard", "content": "hi"}]})["message"].startswith(
            "message role must be one of system, user, assistant"
        )
        assert error({**HI, "stop": 5})["message"] == "stop must be a string or a list of at most 16 strings"
        assert error({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]})["message"] == (
            "only text content is supported"
        )
        assert error({**HI, "temperature": -1})["message"].startswith("temperature must be a finite number >= 0")
        wrong_role = error({"messages": [{"role": ["user"], "content": "hi"}]})
        assert wrong_role["param"] == "messages[0].role" and "valid string" in wrong_role["message"]
        assert error({**HI, "temperature": HUGE})["param"] == "temperature"
        assert (
            "not valid JSON"
            in assert_openai_error(
                httpx.post(url + CHAT, content=b"[" * 5000, headers={"Content-Type": "application/json"}), 400
            )["message"]
        )
        unknown = assert_openai_error(httpx.post(url + CHAT, json={**HI, "model": "gpt-4"}), 404)
        assert unknown["code"] == "model_not_found"


def test_what_was_accepted_before_still_is():
    engine = FakeBackend()
    with running(engine) as url:

        def ok(path, body):
            response = httpx.post(url + path, json=body, timeout=5)
            assert response.status_code == 200, response.text
            return response.json()

        ok(
            CHAT,
            {
                "model": "test-model",
                "messages": [
                    {"role": "developer", "content": "Be brief."},
                    {
                        "role": "user",
                        "content": [{"type": "text", "text": "Good "}, {"type": "text", "text": "morrow"}],
                    },
                    {"role": "assistant", "content": None},
                    {"role": "user"},
                ],
                "stop": "\n",
                "max_completion_tokens": 3,
                "n": 1,
                "seed": 5,
                "repeat_penalty": 1.1,
                "min_p": 0.05,
                "top_k": 40,
                "temperature": 0,
                "top_p": 1,
                "logprobs": False,
                "user": "someone",
                "tools": [],
                "frequency_penalty": 0,
                "response_format": {"type": "text"},
            },
        )
        call = engine.calls[-1]
        assert [(m.role, m.content) for m in call["messages"]] == [
            ("system", "Be brief."),
            ("user", "Good morrow"),
            ("assistant", ""),
            ("user", ""),
        ]
        params = call["params"]
        assert (
            params.max_tokens,
            params.seed,
            params.repetition_penalty,
            params.min_p,
            params.top_k,
            params.temperature,
            params.stop,
        ) == (3, 5, 1.1, 0.05, 40, 0.0, ["\n"])
        ok(
            CHAT,
            {
                **HI,
                "stop": ["a", "b"],
                "repetition_penalty": 1.2,
                "max_tokens": 4,
                "temperature": None,
                "stream": False,
                "stream_options": None,
                "n": None,
                "model": "fake-model",
            },
        )
        assert engine.calls[-1]["params"].repetition_penalty == 1.2
        assert ok(COMPLETIONS, {"prompt": ["The king"], "max_tokens": 2})["choices"][0]["text"] == "Hello there"
        chunks = httpx.post(url + CHAT, json={**HI, "stream": True, "stream_options": {"include_usage": True}}).text
        assert chunks.endswith("data: [DONE]\n\n") and '"usage"' in chunks


# --- 4. content types, Host, the key, CORS, body limits, clients that leave mid-body ---


@pytest.mark.parametrize(
    "content_type,status",
    [
        ("text/plain", 415),
        ("application/x-www-form-urlencoded", 415),
        ("multipart/form-data; boundary=x", 415),
        ("application/jsonp", 415),
        (None, 415),
        ("application/json", 200),
        ("application/json; charset=utf-8", 200),
        ("Application/JSON", 200),
    ],
)
def test_only_json_bodies_are_accepted(fake_url, content_type, status):
    headers = {"Content-Type": content_type} if content_type else {}
    response = httpx.post(fake_url + CHAT, content=json.dumps(HI).encode(), headers=headers, timeout=5)
    if status == 200:
        assert response.status_code == 200, response.text
    else:
        assert assert_openai_error(response, status)["code"] == "unsupported_media_type"


def test_the_host_header_must_name_this_server(fake_url):
    port = port_of(fake_url)
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}", f"[::1]:{port}"):
        assert httpx.post(fake_url + CHAT, json=HI, headers={"Host": host}).status_code == 200, host
    for host in (
        "evil.example",
        f"evil.example:{port}",
        "127.0.0.1:1",
        "localhost",
        f"127.0.0.2:{port}",
        f"localhost.evil.example:{port}",
        "a:b:c",
        f"[::2]:{port}",
    ):
        for method, path in (("POST", CHAT), ("GET", "/health"), ("GET", "/v1/models")):
            response = httpx.request(method, fake_url + path, json=HI, headers={"Host": host})
            assert assert_openai_error(response, 421)["code"] == "host_not_allowed", host
    assert_served(fake_url)


def test_allow_host_and_allow_any_host_open_the_server_deliberately():
    with running(FakeBackend(), allowed_hosts=["chat.example", "proxy.example:8443"]) as url:

        def status(host):
            return httpx.post(url + CHAT, json=HI, headers={"Host": host}).status_code

        assert status("chat.example") == status("chat.example:443") == status("proxy.example:8443") == 200
        assert status("proxy.example") == status("proxy.example:1") == status("other.example") == 421
    with running(FakeBackend(), any_host=True) as url:
        assert httpx.post(url + CHAT, json=HI, headers={"Host": "evil.example"}).status_code == 200


def test_the_host_rule():
    on_all = HostRule("0.0.0.0")
    assert on_all.allows("192.168.1.5:8000", ("192.168.1.5", 8000))  # the address the request came in on
    assert not on_all.allows("192.168.1.6:8000", ("192.168.1.5", 8000))
    assert not on_all.allows("0.0.0.0:8000", ("192.168.1.5", 8000))
    assert on_all.allows("[::1]:8000", ("::1", 8000)) and on_all.allows("[0:0::1]:8000", ("127.0.0.1", 8000))
    assert on_all.allows("[fe80::1]:8000", ("fe80::1", 8000))
    assert on_all.allows("127.0.0.1:8000", ("::ffff:127.0.0.1", 8000))
    named = HostRule("myhost.lan")
    assert named.allows("MyHost.lan:8000", ("10.0.0.2", 8000)) and named.allows("myhost.lan.:8000", ("10.0.0.2", 8000))
    assert not named.allows("myhost.lan:8001", ("10.0.0.2", 8000))
    assert HostRule().allows("localhost", ("127.0.0.1", 80))  # no port: 80
    for bad in (None, "", ":8000", "a:b:c", "[::1", "[::1]x", "host:port", "host:99999", "a b:1", "user@host:1"):
        assert not HostRule().allows(bad, ("127.0.0.1", 8000)), bad
    assert HostRule(any_host=True).allows("anything", ("127.0.0.1", 8000))
    assert split_host("[::1]:80") == ("[::1]", 80) and split_host("Name.Example") == ("name.example", None)


def test_the_key_is_compared_in_constant_time(monkeypatch):
    from chatapp.serving.api_key import authorization_matches

    seen = []

    def spy(header, key):
        seen.append((header, key))
        return authorization_matches(header, key)

    monkeypatch.setattr(server_module, "authorization_matches", spy)  # before the fix: no such name, a plain !=
    with running(FakeBackend(), api_key="sekrit") as url:
        assert httpx.post(url + CHAT, json=HI, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert httpx.get(url + "/v1/models", headers={"Authorization": "Bearer sekrit"}).status_code == 200
        assert httpx.post(url + CHAT, json=HI, headers={"Authorization": "Bearer sekrit"}).status_code == 200
        no_key = httpx.post(url + CHAT, json=HI)
        assert assert_openai_error(no_key, 401)["code"] == "invalid_api_key"
        latin = httpx.post(url + CHAT, json=HI, headers={"Authorization": "Bearer s\xe9krit".encode("latin-1")})
        assert latin.status_code == 401
    assert ("Bearer wrong", "sekrit") in seen and ("Bearer sekrit", "sekrit") in seen


def test_a_refused_cors_preflight_is_openai_json():
    with running(FakeBackend(), cors_origins=["http://ok.example"]) as url:
        preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
        refused = httpx.options(url + CHAT, headers={"Origin": "http://evil.example", **preflight})
        error = assert_openai_error(refused, 400)
        assert error["code"] == "cors_refused" and "origin" in error["message"]
        assert "access-control-allow-origin" not in refused.headers
        allowed = httpx.options(url + CHAT, headers={"Origin": "http://ok.example", **preflight})
        assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == "http://ok.example"
        wrong_header = httpx.options(
            url + CHAT, headers={"Origin": "http://ok.example", **preflight, "Access-Control-Request-Headers": "x-evil"}
        )
        assert assert_openai_error(wrong_header, 400)["code"] == "cors_refused"


def test_a_body_past_the_limit_is_413():
    with running(FakeBackend(), max_body_bytes=1000) as url:
        big = {"messages": [{"role": "user", "content": "x" * 2000}]}
        assert assert_openai_error(httpx.post(url + CHAT, json=big), 413)["code"] == "request_too_large"
        chunked = httpx.post(
            url + CHAT, content=iter([json.dumps(big).encode()[:600]] * 3), headers={"Content-Type": "application/json"}
        )
        assert assert_openai_error(chunked, 413)["code"] == "request_too_large"
        assert_served(url)


class Lines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@contextlib.contextmanager
def no_traceback_logged():
    """Fails if the server logs an error while the block runs (call it once the server has started:
    uvicorn sets its loggers up then)."""
    lines, logger = Lines(), logging.getLogger("uvicorn.error")
    logger.addHandler(lines)
    try:
        yield
    finally:
        logger.removeHandler(lines)
    assert not [
        line
        for line in lines.lines
        if "Traceback" in line or "ClientDisconnect" in line or "Exception in ASGI" in line or "Error" in line
    ], lines.lines


def test_a_client_that_leaves_mid_body_logs_no_traceback():
    with running(FakeBackend()) as url, no_traceback_logged():
        port = port_of(url)
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
                raw.sendall(
                    b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                    b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
                    b'{"messages": [' % port
                )
                time.sleep(0.1)
        time.sleep(0.3)
        assert_served(url)


# --- 5. abandoned work is cancelled, queued work whose client left never starts ---


def test_a_reply_whose_client_left_is_cancelled_and_the_next_is_served():
    engine = FakeBackend(replies=[["one", " two", " three"]], hold_after=1)
    with running(engine) as url, no_traceback_logged():
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(url + CHAT, json=HI, timeout=0.5)  # not streamed; the client gives up mid-reply
        wait_until(lambda: engine.cancelled >= 1, what="the abandoned reply to be cancelled")
        engine.hold_after = None
        assert_served(url)


def test_a_queued_request_whose_client_left_is_never_started():
    engine = FakeBackend(replies=[["held", " reply"]], hold_after=1)
    with running(engine, max_waiting=4) as url, no_traceback_logged():
        results = {}
        first = threading.Thread(target=lambda: results.update(first=httpx.post(url + CHAT, json=HI, timeout=20)))
        first.start()
        wait_until(engine.holding.is_set, what="the first reply to be held")
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(url + CHAT, json={"messages": [{"role": "user", "content": "queued"}]}, timeout=0.5)
        time.sleep(0.3)  # the server sees the queued client's connection close
        engine.hold_after = None
        engine.release()
        first.join(10)
        assert results["first"].status_code == 200
        assert_served(url)
        assert [call["messages"][0].content for call in engine.calls] == ["hi", "hi"]  # never "queued"


# --- the serve command ---


def test_serve_takes_allow_host_and_allow_any_host():
    from chatapp.cli import build_parser

    args = build_parser().parse_args(
        ["serve", "m", "--allow-host", "chat.example", "--allow-host", "proxy:8443", "--allow-any-host"]
    )
    assert args.allow_host == ["chat.example", "proxy:8443"] and args.allow_any_host
    plain = build_parser().parse_args(["serve", "m"])
    assert plain.allow_host == [] and not plain.allow_any_host


def test_serve_refuses_a_malformed_allow_host_before_loading_a_model():
    from chatapp.cli import build_parser
    from chatapp.commands import command_serve

    args = build_parser().parse_args(["serve", "no-such-model", "--allow-host", "a b"])
    with pytest.raises(ValueError, match="--allow-host"):
        command_serve(args)


def test_serve_on_every_interface_says_what_the_host_rule_is(monkeypatch):
    import uvicorn

    monkeypatch.setattr(uvicorn.Server, "run", lambda self: None)
    lines: list[str] = []
    assert server_module.serve(FakeBackend(), ServerOptions(model_id="m"), "0.0.0.0", 8123, log=lines.append) == 0
    said = "\n".join(lines)
    assert "every interface" in said and "localhost" in said and "8123" in said and "--allow-host" in said
    lines.clear()
    server_module.serve(FakeBackend(), ServerOptions(model_id="m", any_host=True), "0.0.0.0", 8123, log=lines.append)
    assert any("--allow-any-host" in line for line in lines)
