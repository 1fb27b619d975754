"""Concurrent streaming clients against an OpenAI-compatible server on this machine.

    python scripts/load_test.py --clients 8 --requests 40 [--compare]

Starts `chatapp serve` on the built-in Q8_0 GGUF (and with --compare,
llama-cpp-python's own server on the same file), sends `--requests` streaming
chat requests from `--clients` concurrent clients to each, one server after
the other, and prints for each: errors (503s counted apart), p50 / p95 time to
first token, and generated tokens per second over the whole run (from the
usage chunk, else one token per text chunk). llama-cpp-python's server runs
with --interrupt_requests false: by default each new request cuts the running
one. Loopback only; the loops are bounded by --requests and a per-request
timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
GGUF = ROOT / "chatapp" / "builtin" / "shakespeare-chat-q8_0.gguf"
PROMPTS = ["Good morrow, my lord.", "What news from the court?", "Who goes there?", "Speak, I charge thee."]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(command: list[str], port: int, log: Path) -> subprocess.Popen:
    process = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=ROOT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.3)
        if process.poll() is not None:
            break
    process.kill()
    raise SystemExit(f"the server did not start: {log.read_text()[-1000:]}")


async def one_request(client: httpx.AsyncClient, url: str, number: int, results: dict) -> None:
    body = {
        "messages": [{"role": "user", "content": PROMPTS[number % len(PROMPTS)]}],
        "max_tokens": 64,
        "temperature": 0.8,
        "seed": number,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started = time.perf_counter()
    try:
        async with client.stream("POST", url + "/v1/chat/completions", json=body, timeout=120) as response:
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
                if any((c.get("delta") or {}).get("content") for c in chunk.get("choices") or []):
                    chunks += 1
                    first = first or time.perf_counter() - started
            results["ttft"].append(first or 0.0)
            results["tokens"] += usage["completion_tokens"] if usage else chunks
    except httpx.HTTPError:
        results["errors"] += 1


async def load(url: str, clients: int, requests: int) -> dict:
    results = {"ttft": [], "tokens": 0, "errors": 0, "busy": 0}
    queue = asyncio.Queue()
    for number in range(requests):
        queue.put_nowait(number)

    async def client_loop(client):
        while not queue.empty():
            await one_request(client, url, queue.get_nowait(), results)

    started = time.perf_counter()
    async with httpx.AsyncClient() as client:
        await asyncio.gather(*(client_loop(client) for _ in range(clients)))
    results["seconds"] = time.perf_counter() - started
    return results


def report(name: str, results: dict) -> str:
    ttft = sorted(results["ttft"]) or [0.0]
    p95 = ttft[min(len(ttft) - 1, int(round(0.95 * (len(ttft) - 1))))]
    return (
        f"| {name} | {len(results['ttft'])} | {results['errors']} | {results['busy']} | "
        f"{statistics.median(ttft) * 1000:,.0f} ms | {p95 * 1000:,.0f} ms | "
        f"{results['tokens'] / results['seconds']:,.0f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--compare", action="store_true", help="also llama-cpp-python's own server on the same file")
    args = parser.parse_args()
    servers = [
        ("chatapp serve", lambda port: [sys.executable, "-m", "chatapp", "serve", str(GGUF), "--port", str(port)])
    ]
    if args.compare:
        servers.append(
            (
                "llama_cpp.server",
                lambda port: [
                    sys.executable,
                    "-m",
                    "llama_cpp.server",
                    "--model",
                    str(GGUF),
                    "--port",
                    str(port),
                    "--n_ctx",
                    "256",
                    "--verbose",
                    "false",
                    "--interrupt_requests",
                    "false",
                ],
            )
        )  # else a new request cuts the running one
    lines = [
        f"{args.clients} clients, {args.requests} streaming requests of up to 64 tokens, {GGUF.name}",
        "| server | replies | errors | 503 | first token p50 | p95 | tokens/s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, command in servers:
        port = free_port()
        process = start(command(port), port, Path(f"/tmp/load-test-{port}.log"))
        try:
            lines.append(report(name, asyncio.run(load(f"http://127.0.0.1:{port}", args.clients, args.requests))))
        finally:
            process.terminate()
            process.wait(20)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
