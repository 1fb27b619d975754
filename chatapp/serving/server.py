"""`chatapp serve`: a model behind the OpenAI API, for other programs.

    GET  /health                  {"status": "ok", "model": ...}
    GET  /v1/models               the one model served
    POST /v1/chat/completions     messages in; a reply, or server-sent events with stream=true
    POST /v1/completions          plain text continued

Starlette on uvicorn. The engine (either backend, through the backend
protocol) runs one generation at a time: it holds one KV cache. A backend with
parallel slots (`slots`, quant/slot_engine.py: `chatapp serve --parallel N`)
runs up to N at once, each reply with a cancel() of its own. Requests past
that wait in a bounded queue; past the queue, 503 with Retry-After. A turn on
the engine (one of its slots) is taken and given back in one place
(`Engine.turn`), around everything done while it is held, so no failure can
keep it. A client that goes away cancels its work: mid-stream or mid-reply the
engine stops within one token; while queued, it is never started. Errors are OpenAI's JSON shape
({"error": {"message", "type", "param", "code"}}) with the right status,
never a traceback.

What the server protects against:

- Request bodies are validated by declared models (`ChatRequest`,
  `TextCompletionRequest`; strict JSON types, extra keys ignored): a wrong type
  anywhere, a number too large for a float, JSON nested past 200 levels, invalid
  UTF-8, a lone surrogate: 400. Bodies past `max_body_bytes` (8 MiB): 413.
- POST bodies must be `Content-Type: application/json` (a charset parameter is
  fine), else 415: a web page cannot send one without a CORS preflight, so no
  page can make the model work behind the user's back with a "simple" request.
- The Host header must name this server: localhost, 127.0.0.1, [::1], the
  `--host` given or the IP address the connection came in on, with the server's
  port; `--allow-host NAME` (repeatable) adds a name, `--allow-any-host` drops
  the check. Anything else is 421: a DNS-rebinding page names its own domain.
- With an API key, `Authorization: Bearer KEY` is compared in constant time.
- CORS is off unless `--cors-origin` allows an origin; a refused preflight is
  a 400 in OpenAI's shape.
- A client that leaves mid-body is dropped quietly (no traceback in the log).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, WrapValidator, field_validator
from pydantic_core import PydanticCustomError
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from chatapp.serving.api_key import authorization_matches
from model.errors import one_line
from model.inference.backend import THINKING, CollectedReply, Event, Finished, TextPiece
from model.inference.sampling import SamplingParams
from model.text.chat_format import ROLES, Message

FINISH_REASON = {"stop": "stop", "length": "length", "cancelled": "stop"}
ROLE_ALIASES = {"developer": "system"}  # OpenAI's newer name for the system role
SAMPLING_FIELDS = {
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "min_p": "min_p",
    "repeat_penalty": "repetition_penalty",
    "repetition_penalty": "repetition_penalty",
    "seed": "seed",
}
MAX_STOP_STRINGS = 16
MAX_BODY_BYTES = 8 * 1024 * 1024  # a 128k-token prompt is about 0.5 MiB of text
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
WILDCARD_HOSTS = ("", "0.0.0.0", "::")
ECHO_CHARS = 80  # of a client's own text quoted back in an error

T = TypeVar("T")
Body = TypeVar("Body", bound="CompletionFields")


class RequestError(Exception):
    """A request the server refuses: an HTTP status and OpenAI's error body."""

    def __init__(
        self,
        status: int,
        message: str,
        error_type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict | None = None,
    ):
        super().__init__(message)
        self.status, self.error_type, self.code, self.param = status, error_type, code, param
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": str(self), "type": self.error_type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


class ClientGone(RequestError):
    """The client went away before its reply began: the answer goes to nobody."""

    def __init__(self) -> None:
        super().__init__(400, "the client went away before its reply began", code="client_gone")


def error_response(request: Request, error: Exception) -> Response:
    """Every error the app answers, as OpenAI's JSON: the one place errors become responses."""
    if isinstance(error, RequestError):
        return error.response()
    if isinstance(error, HTTPException) and error.status_code == 404:
        return RequestError(404, f"no such endpoint: {request.method} {request.url.path}", code="not_found").response()
    if isinstance(error, HTTPException) and error.status_code == 405:
        return RequestError(405, f"{request.method} is not allowed on {request.url.path}").response()
    if isinstance(error, HTTPException):
        return RequestError(error.status_code, str(error.detail)).response()
    return RequestError(500, f"the server failed: {one_line(error)}", "server_error").response()


def echo(text: str) -> str:
    """A client's own text, quoted back in an error: short, and repr'd (no control characters)."""
    return repr(text if len(text) <= ECHO_CHARS else text[:ECHO_CHARS] + "...")


SEND_TIMEOUT_S = 30.0


class ClientTooSlow(Exception):
    """A client that stopped reading its reply: its connection is cut, its slot given to the next."""


def send_within(send: Send, timeout_s: float) -> Send:
    """`send`, but one the client does not take within timeout_s (it stopped reading: the server's
    buffers are full) raises ClientTooSlow instead of holding the engine's slot for as long as it likes."""

    async def timed(message) -> None:
        try:
            await asyncio.wait_for(send(message), timeout_s)
        except asyncio.TimeoutError:
            raise ClientTooSlow() from None

    return timed


@dataclass
class ServerOptions:
    model_id: str
    api_key: str | None = None
    cors_origins: list[str] = field(default_factory=list)
    max_waiting: int = 16  # requests queued behind the running one
    host: str = "127.0.0.1"  # the address listened on (serve() sets it): a name the Host header may give
    allowed_hosts: list[str] = field(default_factory=list)  # --allow-host: NAME (any port) or NAME:PORT
    any_host: bool = False  # --allow-any-host: no Host check at all
    max_body_bytes: int = MAX_BODY_BYTES
    send_timeout_s: float = SEND_TIMEOUT_S  # a client that accepts nothing for this long is cut off


# --- the request bodies, declared ---

RULE = "chatapp_rule"  # a pydantic error whose message is already a whole sentence


def one_rule(message: str, whole: bool = True) -> WrapValidator:
    """Report a field's failure as one rule rather than pydantic's list of union branches. With
    whole=False only the field's own failures (not a list's items') are replaced; a nested rule
    (an error of type RULE) always comes through as it is."""

    def check(value: Any, handler: Callable[[Any], Any]) -> Any:
        try:
            return handler(value)
        except ValidationError as error:
            details = error.errors(include_url=False)
            nested = [d for d in details if d["type"] == RULE]
            if nested:
                raise PydanticCustomError(RULE, str(nested[0]["msg"])) from None
            if not whole and any(d["loc"] for d in details):
                raise
            raise PydanticCustomError(RULE, message) from None

    return WrapValidator(check)


def rule(message: str) -> PydanticCustomError:
    return PydanticCustomError(RULE, message.replace("{", "{{").replace("}", "}}"))


class Strict(BaseModel):
    """JSON types as declared (no "1" for 1, no 1.0 for an integer); unknown keys ignored."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


Finite = Annotated[float, Field(allow_inf_nan=False)]
Stop = Annotated[
    str | Annotated[list[str], Field(max_length=MAX_STOP_STRINGS)] | None,
    one_rule(f"stop must be a string or a list of at most {MAX_STOP_STRINGS} strings"),
]


class TextPart(Strict):
    type: str
    text: str | None = None

    @field_validator("type")
    @classmethod
    def text_only(cls, kind: str) -> str:
        if kind != "text":
            raise rule("only text content is supported")
        return kind


Content = Annotated[
    str | list[TextPart] | None, one_rule("a message's content must be a string or a list of text parts")
]


class ChatMessage(Strict):
    role: str
    content: Content = None
    reasoning_content: str | None = None  # an earlier reply's thinking (llama-server's field)

    @field_validator("role")
    @classmethod
    def known_role(cls, role: str) -> str:
        if ROLE_ALIASES.get(role, role) not in ROLES:
            raise rule(f"message role must be one of {', '.join(ROLES)} (or developer), not {echo(role)}")
        return role

    def message(self) -> Message:
        content = self.content
        text = content if isinstance(content, str) else "".join(part.text or "" for part in content or [])
        role = ROLE_ALIASES.get(self.role, self.role)
        return Message(role, text, reasoning=(self.reasoning_content or "") if role == "assistant" else "")


class StreamOptions(Strict):
    include_usage: bool | None = None


class CompletionFields(Strict):
    """What both completion endpoints take: the model, the sampling settings, streaming."""

    model: str | None = None
    temperature: Finite | None = None
    top_p: Finite | None = None
    min_p: Finite | None = None
    repeat_penalty: Finite | None = None
    repetition_penalty: Finite | None = None
    top_k: int | None = None
    seed: int | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    stop: Stop = None
    n: int | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None

    @field_validator("n")
    @classmethod
    def one_reply(cls, n: int | None) -> int | None:
        if n is not None and n != 1:
            raise rule("n must be 1: this server writes one reply per request")
        return n

    def sampling_params(self, context_length: int) -> SamplingParams:
        """SamplingParams from a request; bad values raise RequestError 400 with the engine's own rule."""
        values: dict[str, Any] = {
            ours: getattr(self, theirs) for theirs, ours in SAMPLING_FIELDS.items() if getattr(self, theirs) is not None
        }
        max_tokens = self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens
        values["max_tokens"] = context_length if max_tokens is None else max_tokens
        if self.stop is not None:
            values["stop"] = [s for s in ([self.stop] if isinstance(self.stop, str) else self.stop) if s]
        try:
            return SamplingParams(**values).validate()
        except (TypeError, ValueError) as error:
            raise RequestError(400, str(error), param=str(error).split(" ")[0]) from None

    @property
    def with_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatRequest(CompletionFields):
    messages: Annotated[
        list[ChatMessage], Field(min_length=1), one_rule("messages must be a non-empty list", whole=False)
    ] = Field(None, validate_default=True)
    # variables for the chat template (enable_thinking, reasoning_effort, ...), as llama-server and vLLM take them
    chat_template_kwargs: dict[str, Any] | None = None

    def sampling_params(self, context_length: int) -> SamplingParams:
        params = super().sampling_params(context_length)
        if not self.chat_template_kwargs:
            return params
        try:
            return replace(params, template_kwargs=dict(self.chat_template_kwargs)).validate()
        except (TypeError, ValueError) as error:
            raise RequestError(400, str(error), param="chat_template_kwargs") from None

    def chat_messages(self) -> list[Message]:
        return [item.message() for item in self.messages]


class TextCompletionRequest(CompletionFields):
    prompt: Annotated[
        str | Annotated[list[str], Field(min_length=1, max_length=1)], one_rule("prompt must be a string")
    ] = Field(None, validate_default=True)

    @property
    def text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


def location(loc: tuple) -> str:
    """pydantic's ('messages', 0, 'role') as messages[0].role."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def invalid_request(error: ValidationError) -> RequestError:
    """A body the models refuse, as one 400: its first problem, where it is, and how many more."""
    details = error.errors(include_url=False)
    first = details[0]
    if first["type"] == "json_invalid":
        reason = str(first["msg"]).removeprefix("Invalid JSON: ")
        return RequestError(400, f"the request body is not valid JSON: {reason}")
    if first["type"] == "model_type" and not first["loc"]:
        return RequestError(400, "the request body must be a JSON object")
    where = location(first["loc"])
    message = first["msg"] if first["type"] == RULE else f"{where}: {first['msg']}"
    more = f" (and {len(details) - 1} more problems)" if len(details) > 1 else ""
    return RequestError(400, f"{message}{more}", param=where or None)


# --- one engine, one generation at a time ---


async def client_gone(receive: Receive) -> None:
    """Returns when the client disconnects (the request body has been read: nothing else comes)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def unless_client_leaves(
    work: Awaitable[T], gone: Callable[[], Awaitable[None]], undo: Callable[[T], None] = lambda result: None
) -> T:
    """`work`'s result, or ClientGone if the client leaves first. The work is then cancelled; if it
    finished all the same (or this task is cancelled as it finishes), undo(result) gives it back."""
    working = asyncio.ensure_future(work)
    leaving = asyncio.ensure_future(gone())

    def abandon() -> None:
        leaving.cancel()
        if not working.done():
            working.cancel()  # a cancelled lock.acquire() never holds the lock
        elif not working.cancelled() and working.exception() is None:
            undo(working.result())

    try:
        await asyncio.wait({working, leaving}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        abandon()
        raise
    if leaving.done():
        if not leaving.cancelled():
            leaving.exception()  # retrieved: a receive() that failed means the client is gone too
        abandon()
        raise ClientGone()
    leaving.cancel()
    return working.result()


async def finish_shielded(future: asyncio.Future[T]) -> T:
    """Wait for `future` even if this task is cancelled meanwhile (the cancellation is raised after):
    what runs in a thread cannot be cancelled, and the engine is not free until it ends."""
    cancelled = False
    while not future.done():
        try:
            await asyncio.wait([future])  # unlike awaiting it, cancelling this wait leaves the future be
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError()
    return future.result()


class Generation:
    """An engine's events, produced in a thread and read here asynchronously; a reply of parallel slots
    (events with a stream_to()) hands them over from the scheduler's thread, with no thread of ours. A
    reply that can be cancelled on its own (events with a cancel(): a slot) is; else the backend is."""

    def __init__(self, backend, events: Iterator[Event]):
        self.backend, self.events = backend, events
        self.complete = False  # every event was read: nothing left to cancel
        self.queue: asyncio.Queue = asyncio.Queue()
        self.ended = asyncio.Event()  # the engine sent the last item (None): it is free of this reply
        self.loop = asyncio.get_running_loop()
        stream_to = getattr(events, "stream_to", None)
        if stream_to is not None:
            stream_to(self._push)
        else:
            threading.Thread(target=self._produce, daemon=True).start()

    def _push(self, item: Event | Exception | None) -> None:
        """From the engine's thread: an event, an exception that ends the reply, or None at its end."""
        self.loop.call_soon_threadsafe(self._arrived, item)

    def _arrived(self, item: Event | Exception | None) -> None:
        self.queue.put_nowait(item)
        if item is None:
            self.ended.set()

    def _produce(self) -> None:
        try:
            for event in self.events:
                self._push(event)
        except Exception as error:  # noqa: BLE001 - sent on as the stream's end
            self._push(error)
        finally:
            self._push(None)

    async def __aiter__(self):
        while True:
            item = await self.queue.get()
            if item is None:
                self.complete = True
                return
            if isinstance(item, Exception):
                raise item
            yield item

    async def stop(self) -> None:
        """Cancel the reply if it is still running and wait until the engine is free again, even if
        this task is being cancelled. A reply read to its end is not cancelled: a late cancel would
        land on whatever the engine runs next."""
        if not self.complete:
            getattr(self.events, "cancel", self.backend.cancel)()
        await finish_shielded(asyncio.ensure_future(self.ended.wait()))


class Engine:
    """The backend behind an asyncio semaphore of its `slots` (1: one reply at a time), with a bounded
    queue in front of it."""

    def __init__(self, backend, max_waiting: int, slots: int = 1):
        self.backend, self.max_waiting, self.slots = backend, max_waiting, slots
        self.lock = asyncio.Semaphore(slots)  # a free slot each (with one slot, it works as a lock)
        self.waiting = 0

    @contextlib.asynccontextmanager
    async def turn(self, gone: Callable[[], Awaitable[None]]) -> AsyncIterator[None]:
        """A slot of the engine, for one request: the one place it is taken and given back. 503 past the queue;
        ClientGone if the client leaves while waiting (its work is then never started)."""
        if self.lock.locked() and self.waiting >= self.max_waiting:
            raise RequestError(
                503, "the server is busy: try again shortly", "server_error", "busy", headers={"Retry-After": "1"}
            )
        self.waiting += 1
        try:
            await unless_client_leaves(self.lock.acquire(), gone, undo=lambda acquired: self.lock.release())
        finally:
            self.waiting -= 1
        try:
            yield
        finally:
            self.lock.release()

    @contextlib.asynccontextmanager
    async def generation(self, call: Callable[[], Iterator[Event]]) -> AsyncIterator[Generation]:
        """A generation started (bad input is a 400, an engine failure a 500), stopped on the way out
        however that comes. A start cannot be abandoned halfway (the engine may hold its own lock until
        its events are read): if this task is cancelled meanwhile, what was started is stopped first."""
        starting = asyncio.ensure_future(asyncio.to_thread(call))
        cancelled: asyncio.CancelledError | None = None
        try:
            events = await finish_shielded(starting)
        except ValueError as error:
            raise RequestError(400, one_line(error)) from None
        except asyncio.CancelledError as error:
            if starting.cancelled() or starting.exception() is not None:
                raise
            events, cancelled = starting.result(), error
        except Exception as error:  # noqa: BLE001 - e.g. the worker process died: one line, not a traceback
            raise RequestError(500, f"the engine failed: {one_line(error)}", "server_error") from None
        generation = Generation(self.backend, events)
        try:
            if cancelled is not None:
                raise cancelled
            yield generation
        finally:
            await generation.stop()


# --- responses ---


def usage(finished: Finished) -> dict:
    return {
        "prompt_tokens": finished.prompt_tokens,
        "completion_tokens": finished.completion_tokens,
        "total_tokens": finished.prompt_tokens + finished.completion_tokens,
    }


def sse(data) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


class Reply:
    """The envelope of one completion: ids, kind and the chunks of a stream."""

    def __init__(self, model_id: str, chat: bool):
        self.model_id, self.chat = model_id, chat
        self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        self.created = int(time.time())

    def envelope(self, kind: str, choices: list, **extra) -> dict:
        return {
            "id": self.id,
            "object": kind,
            "created": self.created,
            "model": self.model_id,
            "choices": choices,
            **extra,
        }

    def whole(self, text: str, finished: Finished, thinking: str = "") -> dict:
        reason = FINISH_REASON.get(finished.reason, "stop")
        if self.chat:
            message = {"role": "assistant", "content": text}
            if thinking:  # as llama-server writes a reasoning model's thinking
                message["reasoning_content"] = thinking
            choice = {
                "index": 0,
                "message": message,
                "finish_reason": reason,
                "logprobs": None,
            }
            return self.envelope("chat.completion", [choice], usage=usage(finished))
        return self.envelope(
            "text_completion",
            [{"index": 0, "text": text, "finish_reason": reason, "logprobs": None}],
            usage=usage(finished),
        )

    def chunk(
        self, text: str | None = None, finished: Finished | None = None, first: bool = False, thinking: bool = False
    ) -> dict:
        reason = FINISH_REASON.get(finished.reason, "stop") if finished else None
        if not self.chat:
            choice = {"index": 0, "text": text or "", "finish_reason": reason, "logprobs": None}
            return self.envelope("text_completion", [choice])
        field = "reasoning_content" if thinking else "content"  # thinking: llama-server's delta field
        delta = {"role": "assistant", "content": ""} if first else ({field: text} if text is not None else {})
        return self.envelope(
            "chat.completion.chunk", [{"index": 0, "delta": delta, "finish_reason": reason, "logprobs": None}]
        )

    def usage_chunk(self, finished: Finished) -> dict:
        kind = "chat.completion.chunk" if self.chat else "text_completion"
        return self.envelope(kind, [], usage=usage(finished))


async def sse_events(generation: Generation, reply: Reply, with_usage: bool) -> AsyncIterator[str]:
    """SSE chunks of a reply. Stopping the generation is not done here (a stream may be left before
    it starts): Completion's turn does it."""
    try:
        if reply.chat:
            yield sse(reply.chunk(first=True))
        async for event in generation:
            if isinstance(event, TextPiece):
                if event.text:
                    yield sse(reply.chunk(event.text, thinking=event.kind == THINKING))
            else:
                yield sse(reply.chunk(finished=event))
                if with_usage:
                    yield sse(reply.usage_chunk(event))
        yield "data: [DONE]\n\n"
    except Exception as error:  # noqa: BLE001 - reported in the stream, as OpenAI does
        yield sse(RequestError(500, f"the engine failed: {error}", "server_error").body())


async def collected(generation: Generation) -> CollectedReply:
    reply = CollectedReply()
    try:
        async for event in generation:
            reply.add(event)
    except Exception as error:  # noqa: BLE001 - an engine failure is a 500 with one line, not a traceback
        raise RequestError(500, f"the engine failed: {one_line(error)}", "server_error") from None
    return reply


class Completion:
    """The ASGI response to one completion request, validated already. The engine's turn is taken
    inside it and held exactly as long as the reply is being made and sent, whatever happens: an
    error, a client that leaves while queued, mid-reply or before a stream's first chunk, shutdown."""

    def __init__(
        self,
        engine: Engine,
        call: Callable[[], Iterator[Event]],
        reply: Reply,
        stream: bool,
        with_usage: bool,
        send_timeout_s: float = SEND_TIMEOUT_S,
    ):
        self.engine, self.call, self.reply, self.stream, self.with_usage = engine, call, reply, stream, with_usage
        self.send_timeout_s = send_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        def gone() -> Awaitable[None]:
            return client_gone(receive)

        response: Response
        async with self.engine.turn(gone), self.engine.generation(self.call) as generation:
            if self.stream:  # StreamingResponse itself stops the stream when the client leaves
                response = StreamingResponse(
                    sse_events(generation, self.reply, self.with_usage),
                    media_type="text/event-stream",
                    headers={"Cache-Control": "no-cache"},
                )
            else:
                whole = await unless_client_leaves(collected(generation), gone)
                if whole.finished is None:
                    raise RequestError(500, "the engine ended a reply without finishing it", "server_error")
                response = JSONResponse(self.reply.whole(whole.text, whole.finished, whole.thinking))
            try:
                await response(scope, receive, send_within(send, self.send_timeout_s))
            except ClientTooSlow:  # the reply stops and its slot is freed; uvicorn closes the connection
                logging.getLogger("uvicorn.error").warning(
                    "a client read nothing for %g s: its reply was cut off", self.send_timeout_s
                )


# --- the app ---


def split_host(value: str) -> tuple[str, int | None] | None:
    """A Host header (or --allow-host) as (name, port): the name lowercased, an IP address in its
    canonical form, [brackets] around IPv6; None if it is not one."""
    value = value.strip().lower()
    if value.startswith("["):
        name, bracket, rest = value[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return None
        port = rest[1:] if rest else None
    else:
        if value.count(":") > 1:
            return None
        name, _, port = value.partition(":") if ":" in value else (value, "", None)
    if port is not None and not (port.isascii() and port.isdigit() and int(port) <= 65535):
        return None
    name = name.rstrip(".")
    if not name or any(c in name for c in "/\\@ ?#") or not name.isascii():
        return None
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return name, int(port) if port is not None else None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    shown = f"[{address}]" if address.version == 6 else str(address)
    return shown, int(port) if port is not None else None


def ip_literal(address: str) -> str | None:
    """An IP address as a Host header names it (127.0.0.1, [::1]); None if it is a name."""
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return None
    given = split_host(f"[{address}]" if ":" in address else address)
    return given[0] if given else None


@dataclass(frozen=True)
class HostRule:
    """Which Host headers the server answers: a page that rebinds its own domain to 127.0.0.1 still
    sends its domain as Host, so it is refused (421)."""

    bound: str = "127.0.0.1"  # --host
    allowed: tuple[str, ...] = ()  # --allow-host: NAME on any port, or NAME:PORT
    any_host: bool = False  # --allow-any-host

    def own_names(self) -> list[str]:
        names = list(LOOPBACK_NAMES)
        bound = split_host(f"[{self.bound}]" if self.bound.count(":") > 1 and "[" not in self.bound else self.bound)
        if self.bound not in WILDCARD_HOSTS and bound and bound[0] not in names:
            names.append(bound[0])
        return names

    def allows(self, host: str | None, server: tuple[str, int] | None) -> bool:
        if self.any_host:
            return True
        given = split_host(host) if host else None
        if given is None:
            return False
        name, port = given
        for entry in self.allowed:
            allowed = split_host(entry)
            if allowed is not None and allowed[0] == name and allowed[1] in (None, port):
                return True
        if server is not None and (port or 80) != server[1]:
            return False
        names = self.own_names()
        local = ip_literal(server[0]) if server else None
        if local is not None:
            names.append(local)  # the IP address the connection came in on (with --host 0.0.0.0)
        return name in names

    def describe(self, port: int | None = None) -> str:
        names = f"{', '.join(self.own_names())} or the IP address it is reached at"
        on = f", with port {port}" if port else ""
        extra = f"; also {', '.join(self.allowed)}" if self.allowed else ""
        return f"{names}{on}{extra}"


class HostCheck:
    """Refuses (421) a request whose Host header does not name this server: DNS rebinding."""

    def __init__(self, app: ASGIApp, rule: HostRule):
        self.app, self.rule = app, rule

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            host = Headers(scope=scope).get("host")
            server = scope.get("server")
            if not self.rule.allows(host, tuple(server) if server else None):
                port = server[1] if server else None
                error = RequestError(
                    421,
                    f"this server answers to {self.rule.describe(port)}, not Host: "
                    f"{echo(host or '')}; `chatapp serve --allow-host NAME` adds a name",
                    code="host_not_allowed",
                )
                await error.response()(scope, receive, send)
                return
        await self.app(scope, receive, send)


class JSONCORSMiddleware(CORSMiddleware):
    """Starlette's CORS, with a refused preflight in OpenAI's JSON shape rather than plain text."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        reason = bytes(response.body).decode("utf-8", "replace")
        headers = {k: v for k, v in response.headers.items() if k.lower() not in ("content-type", "content-length")}
        return RequestError(
            response.status_code,
            f"{reason}: this server allows browser pages from {', '.join(self.allow_origins)} only",
            code="cors_refused",
            headers=headers,
        ).response()


class OpenAIServer:
    """The routes of one served backend: one method per route. Every refusal is a RequestError
    raised, turned into a response in one place (error_response)."""

    def __init__(self, backend, options: ServerOptions):
        self.backend, self.options = backend, options
        self.engine = Engine(backend, options.max_waiting, getattr(backend, "slots", 1))
        self.names = {options.model_id, backend.model_name}

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "model": self.options.model_id})

    async def models(self, request: Request) -> Response:
        self.check_key(request)
        entry = {
            "id": self.options.model_id,
            "object": "model",
            "created": 0,
            "owned_by": "chatapp",
            "context_length": self.backend.context_length,
        }
        return JSONResponse({"object": "list", "data": [entry]})

    async def chat_completions(self, request: Request) -> Completion:
        body = await self.read(request, ChatRequest)
        params, messages = body.sampling_params(self.backend.context_length), body.chat_messages()
        return self.completion(body, lambda: self.backend.chat(messages, params), chat=True)

    async def completions(self, request: Request) -> Completion:
        body = await self.read(request, TextCompletionRequest)
        params, prompt = body.sampling_params(self.backend.context_length), body.text
        return self.completion(body, lambda: self.backend.complete(prompt, params), chat=False)

    # --- the steps of a request ---

    def check_key(self, request: Request) -> None:
        key = self.options.api_key
        if key and not authorization_matches(request.headers.get("authorization", ""), key):
            raise RequestError(
                401, "a valid API key is needed: Authorization: Bearer KEY", "authentication_error", "invalid_api_key"
            )

    async def read(self, request: Request, model: type[Body]) -> Body:
        """The key checked, then the body: JSON by its Content-Type, bounded, as `model` declares it."""
        self.check_key(request)
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type != "application/json":
            raise RequestError(
                415,
                "the request body must be JSON, sent with Content-Type: application/json",
                code="unsupported_media_type",
            )
        try:
            parsed = model.model_validate_json(await self.read_body(request))
        except ValidationError as error:
            raise invalid_request(error) from None
        name = parsed.model
        if name is not None and name not in self.names:
            raise RequestError(
                404,
                f"the model {echo(name)} does not exist here (this server has {self.options.model_id!r})",
                code="model_not_found",
                param="model",
            )
        return parsed

    async def read_body(self, request: Request) -> bytes:
        limit = self.options.max_body_bytes
        too_large = RequestError(413, f"the request body is larger than {limit:,} bytes", code="request_too_large")
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise too_large
        chunks, size = [], 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise too_large
                chunks.append(chunk)
        except ClientDisconnect:
            raise ClientGone() from None
        return b"".join(chunks)

    def completion(self, body: CompletionFields, call: Callable[[], Iterator[Event]], chat: bool) -> Completion:
        reply = Reply(self.options.model_id, chat)
        return Completion(self.engine, call, reply, bool(body.stream), body.with_usage, self.options.send_timeout_s)

    # --- the app ---

    def host_rule(self) -> HostRule:
        return HostRule(self.options.host, tuple(self.options.allowed_hosts), self.options.any_host)

    def app(self) -> Starlette:
        middleware = [Middleware(HostCheck, rule=self.host_rule())]
        if self.options.cors_origins:
            middleware.append(
                Middleware(
                    JSONCORSMiddleware,
                    allow_origins=self.options.cors_origins,
                    allow_methods=["GET", "POST"],
                    allow_headers=["Authorization", "Content-Type"],
                )
            )
        routes = [
            Route("/health", self.health),
            Route("/v1/models", self.models),
            Route("/v1/chat/completions", self.chat_completions, methods=["POST"]),
            Route("/v1/completions", self.completions, methods=["POST"]),
        ]
        handlers = {RequestError: error_response, HTTPException: error_response, Exception: error_response}
        return Starlette(routes=routes, middleware=middleware, exception_handlers=handlers, lifespan=warm_start)


@contextlib.asynccontextmanager
async def warm_start(app: Starlette) -> AsyncIterator[None]:
    """A streamed reply is sent from an anyio task group, whose backend anyio loads on first use (20-30 ms
    of imports): loaded as the server starts, not in its first request."""
    import anyio

    async with anyio.create_task_group():
        pass
    yield


def create_app(backend, options: ServerOptions) -> Starlette:
    """The Starlette application serving `backend`."""
    return OpenAIServer(backend, options).app()


def parallel_note(backend) -> str:
    """How many replies the backend makes at once, when more than one."""
    slots = getattr(backend, "slots", 1)
    return f", {slots} parallel slots of {backend.context_length:,} tokens" if slots > 1 else ""


def serve(backend, options: ServerOptions, host: str = "127.0.0.1", port: int = 8000, log=print) -> int:
    """Run until SIGINT or SIGTERM: then stop accepting, give in-flight replies a moment
    (3 s), cancel the rest, and return 0. A second Ctrl+C stops at once."""
    import signal

    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self):  # uvicorn's own re-raises the signal after shutting down: exit 0 instead
            previous = {number: signal.signal(number, self.stop) for number in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for number, handler in previous.items():
                    signal.signal(number, handler)

        def stop(self, number, frame) -> None:
            self.force_exit = self.should_exit and number == signal.SIGINT
            self.should_exit = True

    options = replace(options, host=host)
    config = uvicorn.Config(
        create_app(backend, options),
        host=host,
        port=port,
        log_level="warning",
        timeout_graceful_shutdown=3,
        access_log=False,
    )
    log(
        f"serving {options.model_id} ({backend.name}{parallel_note(backend)}) on http://{host}:{port}/v1 "
        f"(OpenAI API{', API key required' if options.api_key else ''}); Ctrl+C stops"
    )
    if options.any_host:
        log("--allow-any-host: requests naming any Host are answered (no DNS-rebinding check)")
    elif host in WILDCARD_HOSTS:
        rule = HostRule(host, tuple(options.allowed_hosts))
        log(
            f"listening on every interface: requests must name this server as {rule.describe(port)} "
            "(a Host header); --allow-host NAME adds a name (a DNS name, a proxy's), --allow-any-host drops the check"
        )
    Server(config).run()
    return 0
