"""A model that runs elsewhere, behind the backend protocol: any OpenAI-compatible
server (chatapp serve, llama.cpp's llama-server, Ollama, LM Studio, vLLM).

Text pieces stream in as the server sends them (server-sent events); cancel
closes the stream; finish reason and usage come from the server, time to first
token and tokens/s are measured here. The server tokenizes, so prompt sizes
are estimated (about 4 characters a token) to keep a long chat inside the
context: from the server where it says (chatapp's /v1/models, llama-server's
/props, Ollama's /api/show), else ENDPOINT_CONTEXT. Errors are one line.
No torch, no llama.cpp.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from model.errors import one_line
from model.inference.backend import THINKING, Event, Finished, TextPiece
from model.inference.sampling import SamplingParams
from model.text.chat_format import FittedPrompt, Message

ENDPOINT_CONTEXT = 4096  # when the server does not say
CHARS_PER_TOKEN = 4  # the estimate of prompt sizes (the server's tokenizer is not here)
TOKENS_PER_MESSAGE = 4  # role markers and the like
FINISH = {"stop": "stop", "length": "length", "eos": "stop", "content_filter": "stop", "tool_calls": "stop"}


SPEC_PREFIX = "endpoint:"  # a model on a server, as the app remembers it: endpoint:URL#MODEL


class EndpointError(RuntimeError):
    """The server cannot be used for this; the message is one line."""


@dataclass(frozen=True)
class EndpointModel:
    """A model a server offers, as the model picker lists it."""

    name: str
    url: str
    kind: str = "endpoint"

    @property
    def source(self) -> str:
        return self.url

    @property
    def spec(self) -> str:
        return endpoint_spec(self.url, self.name)


def endpoint_spec(url: str, model: str | None) -> str:
    return f"{SPEC_PREFIX}{api_base(url)}#{model or ''}"


def parse_endpoint_spec(spec: str | None) -> tuple[str, str | None] | None:
    """(url, model or None) for an endpoint spec; None for any other spec."""
    if not spec or not spec.startswith(SPEC_PREFIX):
        return None
    url, _, model = spec[len(SPEC_PREFIX) :].rpartition("#")
    return (url, model or None) if url else (model, None)


def endpoint_models(url: str, api_key: str | None = None, timeout: float = 2.0) -> list[EndpointModel]:
    """What a server offers (GET /v1/models); EndpointError when it cannot say."""
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        response = httpx.get(api_base(url) + "/models", headers=headers, timeout=timeout)
        data = response.json().get("data") if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError, AttributeError) as error:
        raise EndpointError(f"cannot reach {api_base(url)}: {error or type(error).__name__}") from None
    if not isinstance(data, list):
        raise EndpointError(f"{api_base(url)} answered {response.status_code} to /models")
    return [
        EndpointModel(str(entry["id"]), api_base(url)) for entry in data if isinstance(entry, dict) and entry.get("id")
    ]


def as_openai_message(message: Message) -> dict:
    """A message as an OpenAI-compatible server takes it; an earlier reply's thinking as
    reasoning_content (llama-server's), only where there is some."""
    if message.reasoning and message.role == "assistant":
        return {"role": message.role, "content": message.content, "reasoning_content": message.reasoning}
    return {"role": message.role, "content": message.content}


def estimate_tokens(messages: list[Message]) -> int:
    return sum((len(m.content) + len(m.reasoning)) // CHARS_PER_TOKEN + TOKENS_PER_MESSAGE for m in messages) + 1


def api_base(url: str) -> str:
    """The OpenAI API's root for a server URL: http://host:8080 and http://host:8080/v1 both work."""
    url = url.strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    return url if url.endswith("/v1") else url + "/v1"


class EndpointBackend:
    name = "endpoint"
    supports_inspection = False  # the server draws the tokens
    supports_continue = False

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        model: str | None = None,
        context_length: int | None = None,
        client=None,
    ):
        import httpx

        self.url = api_base(url)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = client or httpx.Client(
            base_url=self.url, headers=headers, timeout=httpx.Timeout(10.0, read=600.0)
        )
        self._cancel = threading.Event()
        served = self._request("GET", "/models").get("data") or []
        ids = [entry.get("id") for entry in served if isinstance(entry, dict)]
        if model and ids and model not in ids:
            raise EndpointError(f"{self.url} has no model {model!r} (it has {', '.join(map(str, ids[:8]))})")
        if not model and not ids:
            raise EndpointError(f"{self.url} lists no models: name one with --model")
        self.model_name: str = model or str(ids[0])
        entry = next((e for e in served if isinstance(e, dict) and e.get("id") == self.model_name), {})
        self.context_length = context_length or self._server_context(entry) or ENDPOINT_CONTEXT
        self.trained_context_length = self.context_length

    # --- talking to the server ---

    def _error(self, status: int, text: str) -> EndpointError:
        try:
            detail = json.loads(text).get("error")
            detail = detail.get("message") if isinstance(detail, dict) else detail
        except (ValueError, AttributeError):
            detail = text.strip()
        detail = str(detail or "").splitlines()[0][:200] if detail else ""
        if status == 401:
            return EndpointError(f"{self.url} refused the API key (401): give the right one with --api-key")
        if status == 404:
            return EndpointError(f"{self.url}: not found (404){': ' + detail if detail else ''}")
        if status in (429, 503):
            return EndpointError(f"{self.url} is busy ({status}): try again shortly")
        return EndpointError(f"{self.url} answered {status}{': ' + detail if detail else ''}")

    def _request(self, method: str, path: str, **kwargs) -> dict:
        import httpx

        try:
            response = self.client.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            raise EndpointError(f"cannot reach {self.url}: {error or type(error).__name__}") from None
        if response.status_code >= 400:
            raise self._error(response.status_code, response.text)
        try:
            return response.json()
        except ValueError:
            raise EndpointError(f"{self.url}{path} did not answer JSON: is it an OpenAI-compatible server?") from None

    def _server_context(self, entry: dict) -> int | None:
        """The context the server runs the model with, where it says (best effort, quickly)."""
        for value in (entry.get("context_length"), (entry.get("meta") or {}).get("n_ctx_train")):
            if isinstance(value, int) and value > 0:
                return value
        root = self.url[: -len("/v1")]
        for method, path, body, read in (
            ("GET", root + "/props", None, lambda d: d.get("default_generation_settings", {}).get("n_ctx")),
            (
                "POST",
                root + "/api/show",
                {"model": self.model_name},
                lambda d: next(
                    (v for k, v in (d.get("model_info") or {}).items() if k.endswith(".context_length")), None
                ),
            ),
        ):
            try:
                response = self.client.request(method, path, json=body, timeout=3.0)
                value = read(response.json()) if response.status_code == 200 else None
            except Exception:  # noqa: BLE001 - a server that does not have this endpoint
                value = None
            if isinstance(value, int) and value > 0:
                return value
        return None

    # --- the protocol ---

    def cancel(self) -> None:
        self._cancel.set()

    def reset_cache(self) -> None:
        pass

    def close(self) -> None:
        self.client.close()

    def default_reserve(self, params: SamplingParams) -> int:
        return min(params.max_tokens, self.context_length // 2)

    def prompt_ids(self, text: str) -> list[int]:
        raise ValueError("a remote model's tokens are not known here: this needs a local model")

    def generate_ids(self, prompt, params, stop_ids, notices=None, use_cache=True) -> Iterator[Event]:
        raise ValueError("a remote model takes text, not token ids: this needs a local model")

    def fit(
        self,
        messages: list[Message],
        reserve: int,
        continue_last: bool = False,
        params: SamplingParams | None = None,
    ) -> FittedPrompt:
        """The newest turns that fit (estimated); ids are not known here, only their count (the
        server renders the template, so `params` change nothing in the estimate)."""
        budget = self.context_length - reserve
        system = [m for m in messages if m.role == "system"][:1]
        turns = [m for m in messages if m.role != "system"]
        dropped = 0
        while len(turns) > 1 and estimate_tokens(system + turns) > budget:
            turns, dropped = turns[1:], dropped + 1
        notices = [f"{dropped} earlier message(s) no longer fit the context and were left out"] if dropped else []
        kept = system + turns
        return FittedPrompt([], dropped, 0, notices, token_count=estimate_tokens(kept), messages=kept)

    def chat(
        self,
        messages: list[Message],
        params: SamplingParams,
        reserve: int | None = None,
        inspect: Callable[[dict], None] | None = None,
        continue_last: bool = False,
    ) -> Iterator[Event]:
        params.validate()
        if continue_last:
            raise ValueError("continuing a reply is not offered for a remote model")
        fitted = self.fit(messages, reserve or self.default_reserve(params))
        kept = fitted.messages or []  # fit() always fills both for a remote model
        body = {"messages": [as_openai_message(m) for m in kept]}
        return self._stream("/chat/completions", body, params, fitted.size, fitted.notices, chat=True)

    def complete(self, text: str, params: SamplingParams) -> Iterator[Event]:
        params.validate()
        return self._stream(
            "/completions", {"prompt": text}, params, estimate_tokens([Message("user", text)]), [], chat=False
        )

    def _body(self, body: dict, params: SamplingParams) -> dict:
        body = {
            **body,
            "model": self.model_name,
            "stream": True,
            "stream_options": {"include_usage": True},
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_tokens,
        }
        if params.seed is not None:
            body["seed"] = params.seed
        if params.stop:
            body["stop"] = list(params.stop)
        extras = {
            "top_k": (params.top_k, 0),
            "min_p": (params.min_p, 0.0),
            "repeat_penalty": (params.repetition_penalty, 1.0),
        }
        body.update(
            {key: value for key, (value, off) in extras.items() if value != off}
        )  # llama-server's, only when on
        template_kwargs = {
            **({"enable_thinking": params.thinking} if params.thinking is not None else {}),
            **params.template_kwargs,
        }
        if template_kwargs:  # llama-server's and vLLM's, only when set
            body["chat_template_kwargs"] = template_kwargs
        return body

    def _stream(
        self, path: str, body: dict, params: SamplingParams, prompt_estimate: int, notices: list[str], chat: bool
    ) -> Iterator[Event]:
        import httpx

        self._cancel.clear()
        request = self.client.build_request("POST", path, json=self._body(body, params))
        started = time.perf_counter()
        try:
            response = self.client.send(request, stream=True)
        except httpx.HTTPError as error:
            raise EndpointError(f"cannot reach {self.url}: {error or type(error).__name__}") from None
        if response.status_code >= 400:
            text = response.read().decode("utf-8", errors="replace")
            response.close()
            raise self._error(response.status_code, text)
        return self._events(response, started, prompt_estimate, notices, chat)

    def _events(
        self, response, started: float, prompt_estimate: int, notices: list[str], chat: bool
    ) -> Iterator[Event]:
        import httpx

        pieces, first_at, reason = 0, None, "length"
        usage: dict = {}
        try:
            for line in response.iter_lines():
                if self._cancel.is_set():
                    reason = "cancelled"
                    break
                if not line.startswith("data:"):
                    continue
                data = line[len("data:") :].strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    raise EndpointError(
                        f"{self.url}: {one_line(Exception(chunk['error'].get('message', chunk['error'])))}"
                    )
                usage = chunk.get("usage") or usage
                for choice in chunk.get("choices") or []:
                    delta = choice.get("delta") or {}
                    # a reasoning model's thinking: llama-server's reasoning_content, or reasoning (vLLM, OpenRouter)
                    thinking = (delta.get("reasoning_content") or delta.get("reasoning")) if chat else None
                    if isinstance(thinking, str) and thinking:
                        first_at = first_at or time.perf_counter()
                        pieces += 1
                        yield TextPiece(thinking, [], THINKING)
                    text = delta.get("content") if chat else choice.get("text")
                    if isinstance(text, str) and text:
                        first_at = first_at or time.perf_counter()
                        pieces += 1
                        yield TextPiece(text, [])
                    if choice.get("finish_reason"):
                        reason = FINISH.get(choice["finish_reason"], "stop")
        except (httpx.HTTPError, ValueError) as error:
            raise EndpointError(
                f"the stream from {self.url} was cut after {pieces} piece(s): {one_line(error)}"
            ) from None
        finally:
            response.close()
        now = time.perf_counter()
        completion = usage.get("completion_tokens") or pieces
        first = first_at or now
        yield Finished(
            reason=reason,
            prompt_tokens=usage.get("prompt_tokens") or prompt_estimate,
            completion_tokens=completion,
            time_to_first_token_s=first - started,
            tokens_per_second=(completion - 1) / (now - first) if completion > 1 and now > first else 0.0,
            prefilled_tokens=usage.get("prompt_tokens") or prompt_estimate,
            notices=list(notices),
        )
