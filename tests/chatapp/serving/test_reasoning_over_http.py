"""A reasoning model's thinking over HTTP: `chatapp serve` writes it as `reasoning_content` (in the
message and in stream deltas, as llama-server does), reads an earlier reply's `reasoning_content`
and `chat_template_kwargs`; the endpoint client turns a server's `reasoning_content` (or `reasoning`)
back into thinking pieces and sends the switch and the earlier thinking. Through the official openai
client, on a scripted engine. Loopback only."""

from __future__ import annotations

import httpx

from chatapp.serving.endpoint import EndpointBackend
from model.inference.backend import THINKING, TextPiece, collect_reply
from model.inference.sampling import SamplingParams
from model.text.chat_format import Message
from tests.helpers.fake_backend import FakeBackend
from tests.helpers.served import running

THOUGHT = [(THINKING, "Let me"), (THINKING, " see."), "It is", " 4."]
MESSAGES = [{"role": "user", "content": "2+2?"}]


def client(url: str):
    from openai import OpenAI

    return OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)


def test_the_thinking_comes_apart_as_reasoning_content():
    fake = FakeBackend(replies=[THOUGHT, THOUGHT])
    with running(fake) as url:
        api = client(url)
        whole = api.chat.completions.create(model="test-model", messages=MESSAGES)
        message = whole.choices[0].message
        assert message.content == "It is 4."
        assert message.model_extra is not None and message.model_extra["reasoning_content"] == "Let me see."
        chunks = list(api.chat.completions.create(model="test-model", messages=MESSAGES, stream=True))
        deltas = [c.choices[0].delta for c in chunks if c.choices]
        thinking = "".join((d.model_extra or {}).get("reasoning_content") or "" for d in deltas)
        answer = "".join(d.content or "" for d in deltas)
        assert (thinking, answer) == ("Let me see.", "It is 4.")


def test_a_reply_without_thinking_has_no_reasoning_content():
    fake = FakeBackend(replies=[["Hi."]])
    with running(fake) as url:
        reply = httpx.post(url + "/v1/chat/completions", json={"messages": MESSAGES}, timeout=10).json()
        assert reply["choices"][0]["message"] == {"role": "assistant", "content": "Hi."}


def test_earlier_thinking_and_template_kwargs_reach_the_engine():
    fake = FakeBackend(replies=[["Yes."]])
    with running(fake) as url:
        client(url).chat.completions.create(
            model="test-model",
            messages=[
                {"role": "user", "content": "2+2?"},
                {"role": "assistant", "content": "4.", "reasoning_content": "Add."},
                {"role": "user", "content": "Sure?"},
            ],
            extra_body={"chat_template_kwargs": {"enable_thinking": False}},
        )
    call = fake.calls[-1]
    assert call["messages"][1] == Message("assistant", "4.", reasoning="Add.")
    assert call["params"].template_kwargs == {"enable_thinking": False}


def test_bad_template_kwargs_are_a_400():
    fake = FakeBackend()
    with running(fake) as url:
        for bad in ({"a": {"nested": 1}}, {"a": [1]}, "text"):
            response = httpx.post(
                url + "/v1/chat/completions", json={"messages": MESSAGES, "chat_template_kwargs": bad}, timeout=10
            )
            assert response.status_code == 400, bad
    assert fake.calls == []


def test_the_endpoint_client_shows_a_servers_thinking_and_sends_the_switch():
    fake = FakeBackend(replies=[THOUGHT, ["Yes."]])
    with running(fake) as url:
        remote = EndpointBackend(url)
        events = list(remote.chat([Message("user", "2+2?")], SamplingParams(thinking=True)))
        reply = collect_reply(iter(events))
        assert (reply.thinking, reply.text) == ("Let me see.", "It is 4.")
        assert [e.kind for e in events if isinstance(e, TextPiece)][:2] == [THINKING, THINKING]
        assert fake.calls[-1]["params"].template_kwargs == {"enable_thinking": True}
        conversation = [Message("user", "2+2?"), Message("assistant", reply.text, reply.thinking), Message("user", "?")]
        collect_reply(remote.chat(conversation, SamplingParams()))
    assert fake.calls[-1]["messages"][1] == Message("assistant", "It is 4.", reasoning="Let me see.")
    assert fake.calls[-1]["params"].template_kwargs == {}
