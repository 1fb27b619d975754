"""`chatapp serve`: a model behind the OpenAI API, for other programs.

    GET  /health                  {"status": "ok", "model": ...}
    GET  /v1/models               the one model served
    POST /v1/chat/completions     messages in; a reply, or server-sent events with stream=true
    POST /v1/completions          plain text continued

Starlette on uvicorn. The engine (either backend, through the backend
protocol) runs one generation at a time: it holds one KV cache, and a CPU is
better spent on one reply than split over several. Requests past that wait in
a bounded queue; past the queue, 503 with Retry-After. A client that goes away
mid-stream cancels its generation (the engine stops within one token). Errors
are OpenAI's JSON shape with the right status, never a traceback.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable, Iterator

from model.errors import one_line
from model.inference.backend import CollectedReply, Event, Finished, TextPiece
from model.inference.sampling import SamplingParams
from model.text.chat_format import ROLES, Message

FINISH_REASON = {"stop": "stop", "length": "length", "cancelled": "stop"}
ROLE_ALIASES = {"developer": "system"}  # OpenAI's newer name for the system role
SAMPLING_FIELDS = {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "min_p": "min_p",
                   "repeat_penalty": "repetition_penalty", "repetition_penalty": "repetition_penalty", "seed": "seed"}
MAX_STOP_STRINGS = 16


class RequestError(Exception):
    """A request the server refuses: an HTTP status and OpenAI's error body."""

    def __init__(self, status: int, message: str, error_type: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.error_type, self.code, self.param = status, error_type, code, param
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": str(self), "type": self.error_type, "param": self.param, "code": self.code}}


@dataclass
class ServerOptions:
    model_id: str
    api_key: str | None = None
    cors_origins: list[str] = field(default_factory=list)
    max_waiting: int = 16  # requests queued behind the running one


# --- requests to engine calls ---

def sampling_params(body: dict, context_length: int) -> SamplingParams:
    """SamplingParams from a request; bad values raise RequestError 400 with the engine's own rule."""
    values = {ours: body[theirs] for theirs, ours in SAMPLING_FIELDS.items() if body.get(theirs) is not None}
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    values["max_tokens"] = context_length if max_tokens is None else max_tokens
    stop = body.get("stop")
    if stop is not None:
        stops = [stop] if isinstance(stop, str) else stop
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops) or len(stops) > MAX_STOP_STRINGS:
            raise RequestError(400, f"stop must be a string or a list of at most {MAX_STOP_STRINGS} strings", param="stop")
        values["stop"] = [s for s in stops if s]
    if body.get("n", 1) != 1:
        raise RequestError(400, "n must be 1: this server writes one reply per request", param="n")
    try:
        return SamplingParams(**values).validate()
    except (TypeError, ValueError) as error:
        raise RequestError(400, str(error), param=str(error).split(" ")[0]) from None


def message_text(content) -> str:
    """A message's content: a string, or OpenAI's list of parts (text parts only)."""
    if isinstance(content, str):
        return content
    if content is None:
        return ""
    if isinstance(content, list) and all(isinstance(p, dict) for p in content):
        if any(p.get("type") != "text" for p in content):
            raise RequestError(400, "only text content is supported", param="messages")
        return "".join(str(p.get("text", "")) for p in content)
    raise RequestError(400, "a message's content must be a string or a list of text parts", param="messages")


def chat_messages(body: dict) -> list[Message]:
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise RequestError(400, "messages must be a non-empty list", param="messages")
    messages = []
    for item in raw:
        if not isinstance(item, dict):
            raise RequestError(400, "each message must be an object with a role and content", param="messages")
        role = ROLE_ALIASES.get(item.get("role"), item.get("role"))
        if role not in ROLES:
            raise RequestError(400, f"message role must be one of {', '.join(ROLES)}, not {item.get('role')!r}",
                               param="messages")
        messages.append(Message(role, message_text(item.get("content"))))
    return messages


# --- one engine, one generation at a time ---

class Generation:
    """An engine's events, produced in a thread and read here asynchronously."""

    def __init__(self, backend, events: Iterator[Event]):
        self.backend, self.events = backend, events
        self.complete = False  # every event was read: nothing left to cancel
        self.queue: asyncio.Queue = asyncio.Queue()
        self.loop = asyncio.get_running_loop()
        self.thread = threading.Thread(target=self._produce, daemon=True)
        self.thread.start()

    def _produce(self) -> None:
        try:
            for event in self.events:
                self.loop.call_soon_threadsafe(self.queue.put_nowait, event)
        except Exception as error:  # noqa: BLE001 - sent on as the stream's end
            self.loop.call_soon_threadsafe(self.queue.put_nowait, error)
        self.loop.call_soon_threadsafe(self.queue.put_nowait, None)

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
        """Cancel the reply if it is still running and wait until the engine is free again; shielded,
        as this runs when the client has gone away and the request's task is being cancelled. A reply
        read to its end is not cancelled: a late cancel would land on whatever the engine runs next."""
        import anyio

        if not self.complete:
            self.backend.cancel()
        with anyio.CancelScope(shield=True):
            await asyncio.to_thread(self.thread.join)


class Engine:
    """The backend behind an asyncio lock, with a bounded queue in front of it."""

    def __init__(self, backend, max_waiting: int):
        self.backend, self.max_waiting = backend, max_waiting
        self.lock = asyncio.Lock()
        self.waiting = 0

    async def acquire(self) -> None:
        if self.lock.locked() and self.waiting >= self.max_waiting:
            raise RequestError(503, "the server is busy: try again shortly", "server_error", "busy",
                               headers={"Retry-After": "1"})
        self.waiting += 1
        try:
            await self.lock.acquire()
        finally:
            self.waiting -= 1

    async def start(self, call: Callable[[], Iterator[Event]]) -> Generation:
        """Start a generation (under the lock, which the caller releases); bad input is a 400."""
        try:
            events = await asyncio.to_thread(call)
        except ValueError as error:
            raise RequestError(400, one_line(error)) from None
        return Generation(self.backend, events)


# --- responses ---

def usage(finished: Finished) -> dict:
    return {"prompt_tokens": finished.prompt_tokens, "completion_tokens": finished.completion_tokens,
            "total_tokens": finished.prompt_tokens + finished.completion_tokens}


def sse(data) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


class Reply:
    """The envelope of one completion: ids, kind and the chunks of a stream."""

    def __init__(self, model_id: str, chat: bool):
        self.model_id, self.chat = model_id, chat
        self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        self.created = int(time.time())

    def envelope(self, kind: str, choices: list, **extra) -> dict:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model_id, "choices": choices, **extra}

    def whole(self, text: str, finished: Finished) -> dict:
        reason = FINISH_REASON.get(finished.reason, "stop")
        if self.chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": reason, "logprobs": None}
            return self.envelope("chat.completion", [choice], usage=usage(finished))
        return self.envelope("text_completion", [{"index": 0, "text": text, "finish_reason": reason, "logprobs": None}],
                             usage=usage(finished))

    def chunk(self, text: str | None = None, finished: Finished | None = None, first: bool = False) -> dict:
        reason = FINISH_REASON.get(finished.reason, "stop") if finished else None
        if not self.chat:
            return self.envelope("text_completion", [{"index": 0, "text": text or "", "finish_reason": reason, "logprobs": None}])
        delta = {"role": "assistant", "content": ""} if first else ({"content": text} if text is not None else {})
        return self.envelope("chat.completion.chunk", [{"index": 0, "delta": delta, "finish_reason": reason, "logprobs": None}])

    def usage_chunk(self, finished: Finished) -> dict:
        kind = "chat.completion.chunk" if self.chat else "text_completion"
        return self.envelope(kind, [], usage=usage(finished))


def create_app(backend, options: ServerOptions):
    """The Starlette application serving `backend`."""
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.middleware.cors import CORSMiddleware
    from starlette.requests import Request
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route

    engine = Engine(backend, options.max_waiting)
    names = {options.model_id, backend.model_name}

    def error_response(error: RequestError) -> JSONResponse:
        return JSONResponse(error.body(), status_code=error.status, headers=error.headers)

    def check_key(request: Request) -> None:
        if options.api_key and request.headers.get("authorization", "") != f"Bearer {options.api_key}":
            raise RequestError(401, "a valid API key is needed: Authorization: Bearer KEY", "authentication_error",
                               "invalid_api_key")

    async def read_body(request: Request) -> dict:
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            raise RequestError(400, "the request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise RequestError(400, "the request body must be a JSON object")
        model = body.get("model")
        if model is not None and model not in names:
            raise RequestError(404, f"the model {model!r} does not exist here (this server has {options.model_id!r})",
                               code="model_not_found", param="model")
        return body

    async def health(request: Request):
        return JSONResponse({"status": "ok", "model": options.model_id})

    async def models(request: Request):
        try:
            check_key(request)
        except RequestError as error:
            return error_response(error)
        entry = {"id": options.model_id, "object": "model", "created": 0, "owned_by": "chatapp",
                 "context_length": backend.context_length}
        return JSONResponse({"object": "list", "data": [entry]})

    async def complete(request: Request, chat: bool):
        try:
            check_key(request)
            body = await read_body(request)
            params = sampling_params(body, backend.context_length)
            if chat:
                messages = chat_messages(body)
                call = lambda: backend.chat(messages, params)  # noqa: E731
            else:
                prompt = body.get("prompt")
                if isinstance(prompt, list) and len(prompt) == 1:
                    prompt = prompt[0]
                if not isinstance(prompt, str):
                    raise RequestError(400, "prompt must be a string", param="prompt")
                call = lambda: backend.complete(prompt, params)  # noqa: E731
            await engine.acquire()
        except RequestError as error:
            return error_response(error)
        try:
            generation = await engine.start(call)
        except RequestError as error:
            engine.lock.release()
            return error_response(error)
        reply = Reply(options.model_id, chat)
        if body.get("stream"):
            with_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return StreamingResponse(stream(generation, reply, with_usage), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        try:
            collected = CollectedReply()
            async for event in generation:
                collected.add(event)
            return JSONResponse(reply.whole(collected.text, collected.finished))
        except Exception as error:  # noqa: BLE001 - an engine failure is a 500 with one line, not a traceback
            return error_response(RequestError(500, f"the engine failed: {error}", "server_error"))
        finally:
            await generation.stop()
            engine.lock.release()

    async def stream(generation: Generation, reply: Reply, with_usage: bool):
        """SSE chunks; leaving early (the client went away, the server shuts down) cancels the reply."""
        try:
            if reply.chat:
                yield sse(reply.chunk(first=True))
            async for event in generation:
                if isinstance(event, TextPiece):
                    if event.text:
                        yield sse(reply.chunk(event.text))
                else:
                    yield sse(reply.chunk(finished=event))
                    if with_usage:
                        yield sse(reply.usage_chunk(event))
            yield "data: [DONE]\n\n"
        except Exception as error:  # noqa: BLE001 - reported in the stream, as OpenAI does
            yield sse(RequestError(500, f"the engine failed: {error}", "server_error").body())
        finally:
            await generation.stop()
            engine.lock.release()

    async def chat_completions(request: Request):
        return await complete(request, chat=True)

    async def completions(request: Request):
        return await complete(request, chat=False)

    middleware = []
    if options.cors_origins:
        middleware.append(Middleware(CORSMiddleware, allow_origins=options.cors_origins, allow_methods=["GET", "POST"],
                                     allow_headers=["Authorization", "Content-Type"]))
    routes = [Route("/health", health), Route("/v1/models", models), Route("/v1/chat/completions", chat_completions, methods=["POST"]),
              Route("/v1/completions", completions, methods=["POST"])]

    async def not_found(request: Request, exc):
        return error_response(RequestError(404, f"no such endpoint: {request.method} {request.url.path}", code="not_found"))

    async def method_not_allowed(request: Request, exc):
        return error_response(RequestError(405, f"{request.method} is not allowed on {request.url.path}"))

    return Starlette(routes=routes, middleware=middleware, exception_handlers={404: not_found, 405: method_not_allowed})


def serve(backend, options: ServerOptions, host: str = "127.0.0.1", port: int = 8000, log=print) -> int:
    """Run until SIGINT or SIGTERM: then stop accepting, give in-flight replies a moment
    (3 s), cancel the rest, and return 0. A second Ctrl+C stops at once."""
    import contextlib
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

    config = uvicorn.Config(create_app(backend, options), host=host, port=port, log_level="warning",
                            timeout_graceful_shutdown=3, access_log=False)
    log(f"serving {options.model_id} ({backend.name}) on http://{host}:{port}/v1 "
        f"(OpenAI API{', API key required' if options.api_key else ''}); Ctrl+C stops")
    Server(config).run()
    return 0
