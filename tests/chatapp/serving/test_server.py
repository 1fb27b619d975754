"""`chatapp serve`: the official openai client against the server on both
engines, and the server's own rules (errors, queue, disconnects, keys) on a
scripted engine. Loopback only; every loop is bounded."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from model.text.chat_format import Message
from tests.helpers.fake_backend import FakeBackend
from tests.helpers.gguf_exports import exported
from tests.helpers.served import free_port, running


@pytest.fixture(scope="module", params=["torch", "llama.cpp"])
def engine_server(request, tiny_model_dir):
    if request.param == "torch":
        from model.inference.torch_engine import TorchEngine

        backend = TorchEngine.load(tiny_model_dir, device="cpu")
    else:
        from quant.llama_worker import WorkerBackend

        backend = WorkerBackend.load(exported(tiny_model_dir, "f32")[0])
    with running(backend, model_id="tiny") as url:
        yield backend, url
    backend.close()


def client(url: str, **kwargs):
    from openai import OpenAI

    return OpenAI(base_url=url + "/v1", api_key=kwargs.pop("api_key", "unused"), max_retries=0, **kwargs)


MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Good morrow"}]


def test_the_openai_client_gets_a_reply_and_its_usage(engine_server):
    backend, url = engine_server
    reply = client(url).chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=12, seed=3)
    choice = reply.choices[0]
    assert choice.finish_reason in ("stop", "length") and choice.message.role == "assistant"
    expected_prompt = backend.fit([Message("system", "Be brief."), Message("user", "Good morrow")], 12).ids
    assert reply.usage.prompt_tokens == len(expected_prompt) and 1 <= reply.usage.completion_tokens <= 12
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    assert reply.model == "tiny" and reply.object == "chat.completion"


def test_streaming_gives_the_same_reply_as_not_streaming_and_usage_last(engine_server):
    _, url = engine_server
    api = client(url)
    whole = (
        api.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=16, seed=7).choices[0].message.content
    )
    chunks = list(
        api.chat.completions.create(
            model="tiny", messages=MESSAGES, max_tokens=16, seed=7, stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens >= 1


def test_a_seed_reproduces_and_stop_strings_end_the_text(engine_server):
    _, url = engine_server
    api = client(url)
    first = api.completions.create(model="tiny", prompt="The king", max_tokens=30, seed=11, temperature=1.0)
    again = api.completions.create(model="tiny", prompt="The king", max_tokens=30, seed=11, temperature=1.0)
    assert first.choices[0].text == again.choices[0].text and len(first.choices[0].text) > 4
    stop = first.choices[0].text[2:4]
    stopped = api.completions.create(
        model="tiny", prompt="The king", max_tokens=30, seed=11, temperature=1.0, stop=[stop]
    )
    assert stopped.choices[0].text == first.choices[0].text[: first.choices[0].text.index(stop)]
    assert stopped.choices[0].finish_reason == "stop"


def test_bad_parameters_are_400_with_the_engines_rule_and_an_unknown_model_404(engine_server):
    import openai

    _, url = engine_server
    api = client(url)
    with pytest.raises(openai.BadRequestError, match="temperature must be a finite number >= 0"):
        api.chat.completions.create(model="tiny", messages=MESSAGES, temperature=-1)
    with pytest.raises(openai.BadRequestError, match="n must be 1"):
        api.chat.completions.create(model="tiny", messages=MESSAGES, n=2)
    with pytest.raises(openai.BadRequestError, match="role"):
        api.chat.completions.create(model="tiny", messages=[{"role": "wizard", "content": "hi"}])
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        api.chat.completions.create(model="gpt-4", messages=MESSAGES)
    assert [m.id for m in api.models.list().data] == ["tiny"]


def test_health_and_json_errors_never_a_traceback():
    with running(FakeBackend()) as url:
        assert httpx.get(url + "/health").json()["status"] == "ok"
        for response in (
            httpx.post(
                url + "/v1/chat/completions", content=b"{not json", headers={"Content-Type": "application/json"}
            ),
            httpx.post(url + "/v1/chat/completions", content=b"{}", headers={"Content-Type": "text/plain"}),
            httpx.post(url + "/v1/chat/completions", json=[1, 2]),
            httpx.post(url + "/v1/chat/completions", json={"messages": []}),
            httpx.get(url + "/v1/nothing-here"),
            httpx.get(url + "/v1/chat/completions"),
        ):
            assert 400 <= response.status_code < 500
            assert set(response.json()["error"]) >= {"message", "type"} and "Traceback" not in response.text


def test_a_key_is_required_when_set():
    with running(FakeBackend(), api_key="sekrit") as url:
        body = {"messages": [{"role": "user", "content": "hi"}]}
        assert httpx.post(url + "/v1/chat/completions", json=body).status_code == 401
        assert (
            httpx.post(url + "/v1/chat/completions", json=body, headers={"Authorization": "Bearer wrong"}).status_code
            == 401
        )
        ok = httpx.post(url + "/v1/chat/completions", json=body, headers={"Authorization": "Bearer sekrit"})
        assert ok.status_code == 200 and ok.json()["choices"][0]["message"]["content"] == "Hello there, friend."


def test_a_client_that_leaves_mid_stream_cancels_its_generation():
    engine = FakeBackend(replies=[["one", " two", " three"]], hold_after=1)
    with running(engine) as url:
        body = {"messages": [{"role": "user", "content": "hi"}], "stream": True}
        with httpx.stream("POST", url + "/v1/chat/completions", json=body) as response:
            for line in response.iter_lines():
                if '"one"' in line:
                    break  # the engine now holds after its first piece; leave
        deadline = time.monotonic() + 10
        while engine.cancelled == 0:
            assert time.monotonic() < deadline, "the generation was not cancelled"
            time.sleep(0.01)
        engine.hold_after = None
        after = httpx.post(
            url + "/v1/chat/completions", json={"messages": [{"role": "user", "content": "again"}]}, timeout=10
        )
        assert after.status_code == 200  # the engine is free again


def test_requests_past_the_queue_get_503_with_retry_after():
    engine = FakeBackend(replies=[["held", " reply"]] * 3, hold_after=1)
    body = {"messages": [{"role": "user", "content": "hi"}]}
    with running(engine, max_waiting=1) as url:
        results = {}

        def post(name):
            results[name] = httpx.post(url + "/v1/chat/completions", json=body, timeout=20)

        running_one = threading.Thread(target=post, args=("running",))
        running_one.start()
        deadline = time.monotonic() + 10
        while not engine.holding.is_set():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        queued = threading.Thread(target=post, args=("queued",))
        queued.start()
        time.sleep(0.3)  # let it reach the queue
        refused = httpx.post(url + "/v1/chat/completions", json=body, timeout=10)
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        engine.release()
        running_one.join(10)
        deadline = time.monotonic() + 10
        while queued.is_alive():
            engine.release()
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert results["running"].status_code == 200 and results["queued"].status_code == 200


@pytest.mark.slow
def test_chatapp_serve_stops_cleanly_on_sigterm_mid_stream(tiny_model_dir):
    import signal
    import subprocess
    import sys

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "chatapp", "serve", str(tiny_model_dir), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, server.stderr.read()
            time.sleep(0.2)
        body = {"messages": [{"role": "user", "content": "hi"}], "stream": True, "max_tokens": 200}
        with httpx.stream("POST", f"http://127.0.0.1:{port}/v1/chat/completions", json=body, timeout=30) as response:
            lines = response.iter_lines()
            next(lines)
            server.send_signal(signal.SIGTERM)
            list(lines)  # the stream ends: finished or cancelled, never hanging
        assert server.wait(20) == 0
        assert "Traceback" not in server.stderr.read()
    finally:
        if server.poll() is None:
            server.kill()
