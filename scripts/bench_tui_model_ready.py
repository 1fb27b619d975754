"""How long the TUI takes to show a GGUF model ready, against llama-cpp-python's own load, side by side.

    python scripts/bench_tui_model_ready.py [--repeats 3] [--keep DIR] [FILE.gguf]

The TUI: a fresh interpreter starts as `chatapp chat FILE` does (chatapp.launch starts the llama.cpp
worker first), imports chatapp.tui.app, then times ChatApp(FILE) from its start under Textual's Pilot
(`run_test`) to the header showing the model (the app's sub_title is set when the model is ready: the
GGUF checked, the worker loaded), and, a second later, an F4 switch (the same file opened again: the
spare worker the app started after the first load takes it). The baseline: a fresh interpreter that
imports llama_cpp and times `Llama(FILE, n_ctx=the same context, verbose=False)`.
Both print their import time too, and each process's whole wall clock is measured from here. The
two alternate, so the machine's load hits both alike; the median of the repeats is shown, with the
load average before and after.

Without a file: a Gemma-layout file with Gemma 3's 262,144-token vocabulary (Q8_0, ~206 MB), written
by tests/helpers/foreign_gguf.py (reused from /tmp/coldfiles or --keep DIR when there). Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

GEMMA = "gemma-262k-q8_0.gguf"
KNOWN_PLACES = [Path("/tmp/coldfiles")]
FOREIGN_MAX_CONTEXT = 4096  # quant.llama_load's cap on a foreign file's context (the app's default)

TUI_SNIPPET = """
import asyncio, json, sys, time
started = time.perf_counter()
from chatapp.launch import start_worker_now
start_worker_now(["chat", sys.argv[1]])  # what `chatapp chat FILE` does first
from chatapp.history import HistoryStore
from chatapp.tui.app import ChatApp
from quant import worker_start
imported = time.perf_counter()

async def wait_ready(app, pilot):
    while not app.sub_title:
        if app.load_error:
            raise SystemExit(app.load_error)
        await pilot.pause(0.005)
    return time.perf_counter()

async def main():
    begun = time.perf_counter()
    app = ChatApp(sys.argv[1], store=HistoryStore(":memory:"))
    async with app.run_test(size=(120, 40)) as pilot:
        ready = await wait_ready(app, pilot)
        header = app.sub_title
        # an F4 switch (to the same file, opened again) once the spare worker has had a second to start
        await pilot.pause(1.0)
        spare = bool(worker_start._spare)
        app.sub_title = ""
        switched = time.perf_counter()
        app.start_loading(sys.argv[1], "auto")
        switch_s = await wait_ready(app, pilot) - switched
        await app.action_quit()
    return ready - begun, ready - started, header, switch_s, spare

ready_s, since_start_s, header, switch_s, spare = asyncio.run(main())
print(json.dumps({"import_s": imported - started, "ready_s": ready_s, "since_start_s": since_start_s,
                  "header": header, "switch_s": switch_s, "spare": spare}))
"""

LLAMA_SNIPPET = """
import json, sys, time
started = time.perf_counter()
from llama_cpp import Llama
imported = time.perf_counter()
llm = Llama(model_path=sys.argv[1], n_ctx=int(sys.argv[2]), verbose=False)
loaded = time.perf_counter()
print(json.dumps({"import_s": imported - started, "ready_s": loaded - imported, "since_start_s": loaded - started,
                  "header": f"n_ctx {llm.n_ctx()}"}))
"""


def gemma_file(keep: Path | None) -> Path:
    for folder in [*([keep] if keep else []), *KNOWN_PLACES]:
        if (folder / GEMMA).exists():
            return folder / GEMMA
    folder = keep or Path(tempfile.mkdtemp(prefix="tui-ready-"))
    folder.mkdir(parents=True, exist_ok=True)
    code = (
        "import gguf, sys; from tests.helpers.foreign_gguf import write_foreign_gguf; "
        "write_foreign_gguf(sys.argv[1], 'gemma', name='gemma-262k-q8_0', context_length=8192, "
        "vocab_size=262144, embedding_length=640, head_count=4, block_count=4, feed_forward_length=2048, "
        "weight_type='Q8_0', file_type=int(gguf.LlamaFileType.MOSTLY_Q8_0))"
    )
    print(f"writing {folder / GEMMA} ...", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-c", code, str(folder / GEMMA)], check=True, cwd=ROOT, env=env_for(folder))
    return folder / GEMMA


def env_for(home: Path) -> dict:
    return dict(os.environ, CHATAPP_HOME=str(home), PYTHONPATH=str(ROOT))


def context_of(path: Path) -> int:
    from quant.gguf_header import read_gguf_metadata

    architecture = read_gguf_metadata(path, ("general.architecture",))["general.architecture"]
    keys = (f"{architecture}.context_length", "chatapp.chat_format")
    found = read_gguf_metadata(path, keys)
    if keys[1] in found:
        return int(found[keys[0]])
    return min(int(found.get(keys[0]) or FOREIGN_MAX_CONTEXT), FOREIGN_MAX_CONTEXT)


def measure(arguments: list[str], env: dict) -> dict:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", *arguments], capture_output=True, text=True, cwd=ROOT, env=env)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"failed ({done.returncode}): {done.stderr[-800:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {**result, "process_s": wall}


def load_average() -> str:
    with open("/proc/loadavg") as f:
        return "load average " + ", ".join(f.read().split()[:3])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", nargs="?", type=Path)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep", type=Path, default=None, help="write the Gemma-layout file here and reuse it")
    args = parser.parse_args()
    path = (args.file or gemma_file(args.keep)).resolve()
    context = context_of(path)
    print(f"{path.name}: {path.stat().st_size / 1e6:,.0f} MB, context {context}, {os.cpu_count()} CPUs")
    print(f"before: {load_average()}")
    runs: dict[str, list[dict]] = {"chatapp TUI (Pilot)": [], "llama-cpp-python Llama()": []}
    with tempfile.TemporaryDirectory(prefix="tui-ready-home-") as home:
        env = env_for(Path(home))
        for repeat in range(args.repeats):
            runs["chatapp TUI (Pilot)"].append(measure([TUI_SNIPPET, str(path)], env))
            runs["llama-cpp-python Llama()"].append(measure([LLAMA_SNIPPET, str(path), str(context)], env))
            print(f"  run {repeat + 1}/{args.repeats} done, {load_average()}", file=sys.stderr, flush=True)
    print(f"after:  {load_average()}")
    print(f"\n{'':26} {'ready (s)':>10} {'from start (s)':>15} {'imports (s)':>12} {'process (s)':>12}  header / load")
    for label, results in runs.items():
        ready, since_start, imports, process = (
            statistics.median(r[k] for r in results) for k in ("ready_s", "since_start_s", "import_s", "process_s")
        )
        print(f"{label:26} {ready:10.2f} {since_start:15.2f} {imports:12.2f} {process:12.2f}  {results[-1]['header']}")
    switches = runs["chatapp TUI (Pilot)"]
    spares = sum(r["spare"] for r in switches)
    print(
        f"{'chatapp TUI, F4 switch':26} {statistics.median(r['switch_s'] for r in switches):10.2f}"
        f"  (a spare worker was waiting in {spares} of {len(switches)})"
    )
    print(
        "\nready: the TUI from ChatApp's start to the header showing the model; llama-cpp-python from "
        "Llama( to its return.\nfrom start: the same, from the interpreter's first line (the TUI as `chatapp chat "
        "FILE` starts: its worker first, then its imports; llama-cpp-python: import + load).\nimports: the app's "
        "(chatapp.tui.app) or llama_cpp's; process: the whole interpreter, start to exit.\nF4 switch: the same file "
        f"opened again a second after the first was ready, to its header. Median of {args.repeats}."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
