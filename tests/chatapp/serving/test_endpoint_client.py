"""The endpoint backend (a model behind an OpenAI-compatible server) against
`chatapp serve` and against a server nobody here wrote (llama-cpp-python's
own), in the CLI and the TUI. Loopback only; every wait is bounded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from chatapp.serving.endpoint import EndpointBackend, EndpointError
from model.inference.backend import TextPiece, collect_reply
from model.inference.sampling import SamplingParams
from model.text.chat_format import Message
from tests.helpers.fake_backend import FakeBackend
from tests.helpers.gguf_exports import exported
from tests.helpers.paths import ROOT
from tests.helpers.served import free_port, running
from tests.helpers.tui_app import make_app, reply_texts, send, wait_idle


def collect(events):
    reply = collect_reply(events)
    return reply.text, reply.finished


@pytest.fixture(scope="module")
def served_engine(tiny_model_dir):
    from model.inference.torch_engine import TorchEngine

    engine = TorchEngine.load(tiny_model_dir, device="cpu")
    with running(engine, model_id="tiny") as url:
        yield engine, url


def test_a_reply_through_chatapp_serve_is_the_engines_own(served_engine):
    engine, url = served_engine
    remote = EndpointBackend(url)
    assert remote.model_name == "tiny" and remote.context_length == engine.context_length
    messages = [Message("system", "Be brief."), Message("user", "Good morrow")]
    params = SamplingParams(max_tokens=16, seed=5)
    text, finished = collect(remote.chat(messages, params))
    local_text, local = collect(engine.chat(messages, params))
    assert text == local_text and finished.completion_tokens == local.completion_tokens
    assert finished.prompt_tokens == local.prompt_tokens and finished.reason == local.reason
    assert finished.time_to_first_token_s > 0
    raw, _ = collect(remote.complete("The king", SamplingParams(max_tokens=8, temperature=0)))
    assert raw == collect(engine.complete("The king", SamplingParams(max_tokens=8, temperature=0)))[0]


def test_cancel_closes_the_stream():
    fake = FakeBackend(replies=[["one", " two", " three"]], hold_after=1)
    with running(fake) as url:
        remote = EndpointBackend(url)
        events = remote.chat([Message("user", "hi")], SamplingParams())
        seen = []
        for event in events:
            if isinstance(event, TextPiece):
                seen.append(event.text)
                remote.cancel()
            else:
                finished = event
        assert seen == ["one"] and finished.reason == "cancelled"
        deadline = time.monotonic() + 10
        while fake.cancelled == 0:  # the server saw the client go and cancelled its generation
            assert time.monotonic() < deadline
            time.sleep(0.01)


def test_errors_are_one_line():
    with pytest.raises(EndpointError, match="cannot reach") as refused:
        EndpointBackend(f"http://127.0.0.1:{free_port()}")
    assert "\n" not in str(refused.value)
    with running(FakeBackend(), api_key="sekrit", model_id="fake") as url:
        with pytest.raises(EndpointError, match="refused the API key"):
            EndpointBackend(url)
        with pytest.raises(EndpointError, match="has no model 'gpt-4'"):
            EndpointBackend(url, api_key="sekrit", model="gpt-4")
        assert EndpointBackend(url, api_key="sekrit").model_name == "fake"


def test_a_stream_cut_in_the_middle_keeps_the_partial_reply():
    fake = FakeBackend(replies=[["a", " partial", " reply", " never ends"]], fail_after=2)
    with running(fake) as url:
        remote = EndpointBackend(url)
        pieces = []
        with pytest.raises(EndpointError, match="fake engine broke down"):
            for event in remote.chat([Message("user", "hi")], SamplingParams()):
                pieces.append(event.text)
        assert pieces == ["a", " partial"]


@pytest.mark.asyncio
async def test_the_tui_chats_over_an_endpoint(served_engine):
    _, url = served_engine
    app = make_app(EndpointBackend(url))
    async with app.run_test() as pilot:
        await send(pilot, "Good morrow")
        await wait_idle(pilot)
        stored = app.store.messages(app.chat.conversation.id)[-1]
        assert stored.status in ("complete", "length") and stored.content and reply_texts(app)[-1] == stored.content


def test_chatapp_run_with_an_endpoint(served_engine):
    _, url = served_engine
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "chatapp",
            "run",
            "--endpoint",
            url,
            "--max-tokens",
            "6",
            "--seed",
            "2",
            "--json",
            "Good morrow",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["backend"] == "endpoint" and data["model"] == "tiny" and 1 <= data["completion_tokens"] <= 6


@pytest.mark.slow
def test_against_llama_cpp_pythons_own_server(tiny_model_dir, tmp_path):
    """A server nobody here wrote, on our exported GGUF."""
    gguf = exported(tiny_model_dir, "f32")[0]
    port = free_port()
    log = open(tmp_path / "server.log", "w")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(gguf),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            "256",
            "--verbose",
            "false",
        ],
        stdout=log,
        stderr=log,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                remote = EndpointBackend(f"http://127.0.0.1:{port}")
                break
            except EndpointError:
                assert server.poll() is None and time.monotonic() < deadline, (tmp_path / "server.log").read_text()[
                    -2000:
                ]
                time.sleep(0.2)
        text, finished = collect(remote.chat([Message("user", "Good morrow")], SamplingParams(max_tokens=12, seed=3)))
        assert finished.reason in ("stop", "length") and finished.completion_tokens >= 1
        assert finished.prompt_tokens > 0 and finished.tokens_per_second >= 0
        raw, finished = collect(remote.complete("The king", SamplingParams(max_tokens=8, seed=3)))
        assert raw and finished.completion_tokens >= 1
    finally:
        server.terminate()
        server.wait(20)
        log.close()


def test_the_endpoint_path_imports_no_torch():
    script = (
        "import sys\nimport chatapp.serving.endpoint, chatapp.serving.server\n"
        "assert 'torch' not in sys.modules\nprint('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.stdout.strip() == "ok", result.stderr[-1000:]


@pytest.mark.asyncio
async def test_f4_lists_the_models_of_known_servers_and_opens_one(served_engine, tmp_path):
    from chatapp.history import HistoryStore
    from chatapp.serving.endpoint import endpoint_spec
    from chatapp.settings import Settings, load_settings
    from chatapp.tui.app import ChatApp
    from chatapp.tui.screens.models import ModelPickerScreen
    from tests.helpers.tui_app import wait_until

    _, url = served_engine
    settings = Settings(path=tmp_path / "settings.toml")
    app = ChatApp(endpoint_spec(url, "tiny"), store=HistoryStore(), settings=settings)
    async with app.run_test() as pilot:
        await wait_until(pilot, lambda: app.engine is not None or app.load_error, timeout=30, what="the model to load")
        assert app.load_error is None and app.engine.name == "endpoint" and app.engine.model_name == "tiny"
        app.remember_endpoint(url + "/v1")
        assert load_settings(tmp_path / "settings.toml").endpoints == [url + "/v1"]  # kept for the next start
        specs = {getattr(ref, "spec", None) for ref in app.model_choices()}
        assert endpoint_spec(url, "tiny") in specs
        app.chat.action_models()
        await pilot.pause()
        picker = app.screen
        assert isinstance(picker, ModelPickerScreen)
        ids = [option.id for option in picker.query_one("#models").options]
        assert endpoint_spec(url, "tiny") in ids
