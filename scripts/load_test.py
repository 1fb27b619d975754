"""Concurrent streaming clients against OpenAI-compatible servers on this machine.

    python scripts/load_test.py --clients 1,4,8,16 --parallel 1,4 [--gguf FILE]
        [--llama-server PATH] [--compare] [--url URL ...] [--threads 1 --threads-batch 2 --context 512]

Each server gets the same requests: for each client count C, C concurrent clients send
C x --requests-per-client streaming chat requests (prompt i is PROMPTS[i % 4], seed i, temperature
0.8, top-k 40, up to --max-tokens tokens). Servers, one after the other:

- `chatapp serve FILE --parallel P` for each P of --parallel (1 is today's one reply at a time);
  --chatapp-command replaces `python -m chatapp serve` (e.g. a build without the flag yet);
- with --llama-server PATH, llama.cpp's llama-server on the same file, for each P: `-np P`, the same
  threads, and `-c` of P times --context (llama-server splits its context over its slots; chatapp's
  --context is each slot's);
- with --compare, llama-cpp-python's own server (`--interrupt_requests false`: by default each new
  request cuts the running one);
- each --url: a server already running (any OpenAI-compatible one), measured as it is.

Printed per server and client count: replies, errors (503s apart), time to first token p50 / p95,
and generated tokens per second over the whole run (from the usage chunk, else one token per text
chunk); and the load average before and after. Loopback only; every loop is bounded by the request
count and a per-request timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
GGUF = ROOT / "chatapp" / "builtin" / "shakespeare-chat-q8_0.gguf"
PROMPTS = ["Good morrow, my lord.", "What news from the court?", "Who goes there?", "Speak, I charge thee."]
REQUEST_TIMEOUT_S = 300


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(command: list[str], port: int, log: Path) -> subprocess.Popen:
    process = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=ROOT)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.3)
        if process.poll() is not None:
            break
    process.kill()
    raise SystemExit(f"the server did not start ({shlex.join(command)}): {log.read_text()[-1000:]}")


async def one_request(client: httpx.AsyncClient, url: str, number: int, max_tokens: int, results: dict) -> None:
    body = {
        "messages": [{"role": "user", "content": PROMPTS[number % len(PROMPTS)]}],
        "max_tokens": max_tokens,
        "temperature": 0.8,
        "top_k": 40,  # llama-server's default, sent to every server alike
        "seed": number,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started = time.perf_counter()
    try:
        async with client.stream(
            "POST", url + "/v1/chat/completions", json=body, timeout=REQUEST_TIMEOUT_S
        ) as response:
            if response.status_code == 503:
                results["busy"] += 1
                return
            if response.status_code != 200:
                results["errors"] += 1
                return
            first, chunks, usage = None, 0, None
            async for line in response.aiter_lines():
                if not line.startswith("data:") or line.endswith("[DONE]"):
                    continue
                chunk = json.loads(line[5:])
                usage = chunk.get("usage") or usage
                deltas = [c.get("delta") or {} for c in chunk.get("choices") or []]
                if any(d.get("content") or d.get("reasoning_content") for d in deltas):
                    chunks += 1
                    first = first or time.perf_counter() - started
            results["ttft"].append(first or 0.0)
            results["tokens"] += usage["completion_tokens"] if usage else chunks
    except httpx.HTTPError:
        results["errors"] += 1


async def load(url: str, clients: int, requests: int, max_tokens: int) -> dict:
    results: dict = {"ttft": [], "tokens": 0, "errors": 0, "busy": 0}
    queue: asyncio.Queue = asyncio.Queue()
    for number in range(requests):
        queue.put_nowait(number)

    async def client_loop(client):
        while not queue.empty():
            await one_request(client, url, queue.get_nowait(), max_tokens, results)

    started = time.perf_counter()
    limits = httpx.Limits(max_connections=clients + 4)
    async with httpx.AsyncClient(limits=limits) as client:
        await asyncio.gather(*(client_loop(client) for _ in range(clients)))
    results["seconds"] = time.perf_counter() - started
    return results


def report(name: str, clients: int, results: dict) -> str:
    ttft = sorted(results["ttft"]) or [0.0]
    p95 = ttft[min(len(ttft) - 1, int(round(0.95 * (len(ttft) - 1))))]
    return (
        f"| {name} | {clients} | {len(results['ttft'])} | {results['errors']} | {results['busy']} | "
        f"{statistics.median(ttft) * 1000:,.0f} ms | {p95 * 1000:,.0f} ms | "
        f"{results['tokens'] / results['seconds']:,.1f} |"
    )


def load_average() -> str:
    try:
        return ", ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "unknown"


def servers_to_run(args) -> list[tuple[str, Callable[[int], list[str]] | None, str | None]]:
    """(name, command for a port or None, URL or None): the servers to measure, in order."""
    gguf = str(args.gguf)
    threads = ["--threads", str(args.threads)] if args.threads else []
    threads_batch = ["--threads-batch", str(args.threads_batch)] if args.threads_batch else []
    context = ["--context", str(args.context)] if args.context else []
    chatapp = shlex.split(args.chatapp_command) if args.chatapp_command else [sys.executable, "-m", "chatapp", "serve"]
    servers: list[tuple[str, Callable[[int], list[str]] | None, str | None]] = []
    for parallel in args.parallel:

        def chatapp_command(port: int, parallel: int = parallel) -> list[str]:
            flags = ["--parallel", str(parallel)]
            return [*chatapp, gguf, "--port", str(port), *flags, *threads, *threads_batch, *context, "--queue", "64"]

        servers.append((f"chatapp serve --parallel {parallel}", chatapp_command, None))
    if args.llama_server:
        for parallel in args.parallel:

            def llama_server(port: int, parallel: int = parallel) -> list[str]:
                command = [args.llama_server, "-m", gguf, "--port", str(port), "-np", str(parallel)]
                command += ["-t", str(args.threads)] if args.threads else []
                command += ["-tb", str(args.threads_batch)] if args.threads_batch else []
                command += ["-c", str(args.context * parallel)] if args.context else []
                return command + ["--no-webui"]

            servers.append((f"llama-server -np {parallel}", llama_server, None))
    if args.compare:

        def llama_cpp_python(port: int) -> list[str]:
            return [
                sys.executable, "-m", "llama_cpp.server", "--model", gguf, "--port", str(port),
                "--n_ctx", str(args.context or 256), "--verbose", "false", "--interrupt_requests", "false",
            ]  # fmt: skip

        servers.append(("llama_cpp.server", llama_cpp_python, None))
    servers += [(url, None, url.rstrip("/").removesuffix("/v1")) for url in args.url]
    return servers


def counts(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=counts, default=[8], help="client counts, e.g. 1,4,8,16 (default 8)")
    parser.add_argument("--requests-per-client", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--gguf", type=Path, default=GGUF, help="the file every started server serves")
    parser.add_argument(
        "--parallel",
        type=counts,
        default=None,
        help="chatapp (and llama-server) slots, e.g. 1,4 (default 1; none with --url)",
    )
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--threads-batch", type=int, default=None)
    parser.add_argument("--context", type=int, default=None, help="tokens per slot")
    parser.add_argument("--llama-server", default=None, metavar="PATH", help="llama.cpp's llama-server binary")
    parser.add_argument("--compare", action="store_true", help="also llama-cpp-python's own server")
    parser.add_argument("--url", action="append", default=[], help="a running server's base URL (repeatable)")
    parser.add_argument("--chatapp-command", default=None, help="instead of `python -m chatapp serve`")
    args = parser.parse_args()
    if args.parallel is None:
        args.parallel = [] if args.url else [1]
    lines = [
        f"clients {','.join(map(str, args.clients))}, {args.requests_per_client} streaming requests per client "
        f"of up to {args.max_tokens} tokens, {args.gguf.name}; load average before: {load_average()}",
        "| server | clients | replies | errors | 503 | first token p50 | p95 | tokens/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, command, url in servers_to_run(args):
        process = None
        if command is not None:
            port = free_port()
            process = start(command(port), port, Path(f"/tmp/load-test-{port}.log"))
            url = f"http://127.0.0.1:{port}"
        assert url is not None
        try:
            for clients in args.clients:
                requests = clients * args.requests_per_client
                results = asyncio.run(load(url, clients, requests, args.max_tokens))
                lines.append(report(name, clients, results))
                print(lines[-1], file=sys.stderr, flush=True)
        finally:
            if process is not None:
                process.terminate()
                process.wait(20)
    lines.append(f"load average after: {load_average()}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
