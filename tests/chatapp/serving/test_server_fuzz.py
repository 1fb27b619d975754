"""`chatapp serve` fuzzed from its own request models: hypothesis builds bodies from the fields that
ChatRequest and TextCompletionRequest declare, valid and broken (a field of the wrong type, a huge
number, deep nesting, odd unicode, a field missing, bytes that are not JSON), sent with random
content types, Host headers, methods and paths to the app on a scripted engine. Every answer must
be a documented status with OpenAI's error shape (or a well-formed reply / SSE stream for 200), and
after each one a plain request is still answered within a second.

Derandomized (the same cases every run); CHATAPP_FUZZ_EXAMPLES sets how many (default 1000, about
10 s)."""

from __future__ import annotations

import json
import os
import re
import types
from collections import Counter
from typing import Annotated, Any, Union, get_args, get_origin

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from chatapp.serving.server import ChatRequest, TextCompletionRequest
from tests.helpers.fake_backend import FakeBackend
from tests.helpers.served import running

EXAMPLES = int(os.environ.get("CHATAPP_FUZZ_EXAMPLES", "1000"))
DOCUMENTED = {200, 400, 401, 404, 405, 413, 415, 421, 503}
ERROR_KEYS = {"message", "type", "param", "code"}
CHAT, COMPLETIONS = "/v1/chat/completions", "/v1/completions"
PLAIN = {"messages": [{"role": "user", "content": "hi"}]}
KEY = "fuzz-key"

# Values that make sense for some fields, so that valid bodies get through often enough to be useful.
FIELD_VALUES: dict[str, st.SearchStrategy] = {
    "role": st.sampled_from(["system", "user", "assistant", "developer"]) | st.text(max_size=8),
    "type": st.just("text") | st.sampled_from(["image_url", "input_audio", ""]),
    "model": st.sampled_from([None, "fuzz-model", "fake-model", "gpt-4"]),
    "temperature": st.floats(0, 2) | st.integers(-1, 3),
    "top_p": st.floats(0.01, 1) | st.just(0),
    "min_p": st.floats(0, 1),
    "max_tokens": st.integers(0, 8),
    "max_completion_tokens": st.integers(0, 8),
    "n": st.sampled_from([None, 1, 1, 2]),
    "seed": st.integers(-1, 2**64),
    "top_k": st.integers(-1, 50),
    "repeat_penalty": st.floats(0.5, 2),
    "repetition_penalty": st.floats(0.5, 2),
}
JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from([10**400, -(10**400), 2**63, 2**64, 1e308, -0.0, ""])
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
FIELD_VALUES["chat_template_kwargs"] = st.none() | st.dictionaries(
    st.sampled_from(["enable_thinking", "reasoning_effort", "thinking"]) | st.text(max_size=8), JSON_VALUES, max_size=3
)


def declared(annotation: Any, name: str = "") -> st.SearchStrategy:
    """Valid-looking values of a type a request model declares (its constraints are left to the server)."""
    if name in FIELD_VALUES:
        return FIELD_VALUES[name]
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return declared(args[0])
    if origin in (Union, types.UnionType):
        return st.one_of([declared(arg) for arg in args])
    if annotation is type(None):
        return st.none()
    if origin is list:
        return st.lists(declared(args[0]), min_size=1, max_size=3)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return body_of(annotation)
    simple = {str: st.text(max_size=24), bool: st.booleans(), int: st.integers(0, 64), float: st.floats(0, 1)}
    return simple[annotation]


def body_of(model: type[BaseModel]) -> st.SearchStrategy[dict]:
    """A JSON object for `model`: its required fields (and messages / prompt) always, the rest maybe."""
    needed = {name for name, info in model.model_fields.items() if info.is_required() or info.validate_default}
    fields = {name: declared(info.annotation, name) for name, info in model.model_fields.items()}
    return st.fixed_dictionaries(
        {name: fields[name] for name in needed}, optional={name: s for name, s in fields.items() if name not in needed}
    )


def broken(body: dict) -> st.SearchStrategy[dict]:
    """The body with one field of the wrong type, dropped, or an unknown key added; or nested deep."""
    keys = sorted(body)
    changes = (
        [
            st.tuples(st.just("set"), st.sampled_from(keys), JSON_VALUES),
            st.tuples(st.just("drop"), st.sampled_from(keys), st.none()),
            st.tuples(st.just("set"), st.text(max_size=8), JSON_VALUES),
            st.tuples(st.just("deep"), st.sampled_from(keys), st.sampled_from([50, 199, 250, 5000])),
        ]
        if keys
        else [st.tuples(st.just("set"), st.text(max_size=8), JSON_VALUES)]
    )

    def apply(change) -> dict:
        kind, key, value = change
        out = dict(body)
        if kind == "drop":
            out.pop(key, None)
        elif kind == "deep":
            out[key] = f"@@deep{value}@@"  # nested in the bytes by encoded(): too deep for json.dumps
        else:
            out[key] = value
        return out

    return st.one_of(changes).map(apply)


def deep_bytes(depth: int, opener: bytes) -> bytes:
    closer = {b"[": b"]", b'{"a":': b"}"}[opener]
    return b'{"messages": ' + opener * depth + b"1" + closer * depth + b"}"


def encoded(body: Any) -> bytes:
    raw = json.dumps(body, ensure_ascii=False).encode("utf-8", "surrogatepass")
    return re.sub(rb'"@@deep(\d+)@@"', lambda m: b"[" * int(m[1]) + b"1" + b"]" * int(m[1]), raw)


@st.composite
def fuzzed_requests(draw) -> dict:
    endpoint = draw(st.sampled_from([CHAT, CHAT, COMPLETIONS]))
    model = ChatRequest if endpoint == CHAT else TextCompletionRequest
    body = draw(body_of(model))
    if draw(st.booleans()):
        body = draw(broken(body))
    raw = encoded(body)
    shape = draw(st.sampled_from(["json"] * 6 + ["deep", "bytes", "truncated", "surrogate", "not-object", "big"]))
    if shape == "deep":
        depth = draw(st.sampled_from([100, 199, 200, 201, 1000, 10_000]))
        raw = deep_bytes(depth, draw(st.sampled_from([b"[", b'{"a":'])))
    elif shape == "bytes":
        raw = draw(st.binary(max_size=64))
    elif shape == "truncated":
        raw = raw[: draw(st.integers(0, max(len(raw) - 1, 0)))]
    elif shape == "surrogate":
        raw = raw.replace(b'"user"', b'"\\udcff"', 1) + draw(st.sampled_from([b"", b"\xff", b"\xed\xa0\x80"]))
    elif shape == "big":  # past the server's body limit (64 KiB here), or just under it
        raw = encoded({**body, "padding": "x" * draw(st.sampled_from([60_000, 70_000]))})
    elif shape == "not-object":
        raw = encoded(draw(JSON_VALUES.filter(lambda v: not isinstance(v, dict))))
    content_type = draw(
        st.sampled_from(
            ["application/json"] * 6
            + [
                "application/json; charset=utf-8",
                "APPLICATION/JSON",
                "text/plain",
                "application/x-www-form-urlencoded",
                "multipart/form-data; boundary=x",
                "application/jsonx",
                "",
                None,
            ]
        )
    )
    host = draw(
        st.sampled_from(
            [None] * 6
            + [
                "localhost:PORT",
                "[::1]:PORT",
                "evil.example",
                "evil.example:PORT",
                "127.0.0.1:1",
                "localhost",
                "",
                "a:b:c",
                "127.0.0.1:PORT\u00e9",
            ]
        )
    )
    method, path = draw(
        st.sampled_from(
            [("POST", endpoint)] * 8
            + [
                ("GET", endpoint),
                ("PUT", endpoint),
                ("GET", "/v1/models"),
                ("GET", "/health"),
                ("POST", "/v1/models"),
                ("POST", "/v1/nothing"),
                ("DELETE", "/health"),
            ]
        )
    )
    authorization = draw(
        st.sampled_from(
            [f"Bearer {KEY}"] * 6 + [None, "Bearer wrong", f"Bearer {KEY}x", "Bearer", KEY, f"bearer {KEY}"]
        )
    )
    return {
        "method": method,
        "path": path,
        "raw": raw,
        "content_type": content_type,
        "host": host,
        "authorization": authorization,
        "stream": isinstance(body, dict) and body.get("stream") is True,
    }


def check_sse(text: str) -> None:
    events = [line for line in text.split("\n\n") if line]
    assert events and events[-1] == "data: [DONE]", text[-300:]
    for event in events[:-1]:
        assert event.startswith("data: ") and "\n" not in event, event
        chunk = json.loads(event[len("data: ") :])
        assert "error" in chunk or ("choices" in chunk and "id" in chunk), chunk


def check(case: dict, response: httpx.Response) -> None:
    status = response.status_code
    assert status in DOCUMENTED, (status, response.text[:500], case)
    if status != 200:
        error = response.json()["error"]
        assert set(error) == ERROR_KEYS and isinstance(error["message"], str) and error["message"], response.text
        return
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        assert case["stream"], case
        check_sse(response.text)
    else:
        reply = response.json()
        if case["path"] in (CHAT, COMPLETIONS):
            assert not case["stream"] and reply["choices"] and "usage" in reply, (reply, case)


def test_the_server_answers_every_fuzzed_request_with_a_documented_status_and_stays_free(record_property):
    statuses: Counter = Counter()
    with running(
        FakeBackend(context_length=64), model_id="fuzz-model", api_key=KEY, max_waiting=2, max_body_bytes=64 * 1024
    ) as url:
        port = int(url.rsplit(":", 1)[1])
        client = httpx.Client(base_url=url, timeout=10)

        @settings(
            max_examples=EXAMPLES,
            derandomize=True,
            database=None,
            deadline=None,
            suppress_health_check=[
                HealthCheck.too_slow,
                HealthCheck.data_too_large,
                HealthCheck.function_scoped_fixture,
            ],
        )
        @given(case=fuzzed_requests())
        def one(case: dict) -> None:
            headers = {}
            if case["content_type"] is not None:
                headers["Content-Type"] = case["content_type"]
            if case["host"] is not None:  # the port is filled in here: the cases do not depend on it
                headers["Host"] = case["host"].replace("PORT", str(port)).encode("latin-1")
            if case["authorization"] is not None:
                headers["Authorization"] = case["authorization"]
            response = client.request(case["method"], case["path"], content=case["raw"], headers=headers)
            check(case, response)
            statuses[response.status_code] += 1
            after = client.post(CHAT, json=PLAIN, headers={"Authorization": f"Bearer {KEY}"}, timeout=1.0)
            assert after.status_code == 200, after.text

        try:
            one()
        finally:
            client.close()
    total = sum(statuses.values())
    record_property("fuzz_cases", total)
    print(f"\nfuzz: {total} cases ran clean; statuses {dict(sorted(statuses.items()))}")
    assert total >= min(EXAMPLES, 50) and statuses[200] and statuses[400]


@pytest.mark.parametrize("model", [ChatRequest, TextCompletionRequest])
def test_the_strategies_cover_every_declared_field(model):
    for name, info in model.model_fields.items():
        assert declared(info.annotation, name) is not None, name
