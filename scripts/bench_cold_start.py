"""A cold `chatapp run` against llama-cpp-python's own load, side by side in one run.

    python scripts/bench_cold_start.py [--repeats 3] [--keep DIR] [--tree LABEL=PATH ...] [FILE.gguf ...]

For each file: a fresh `chatapp run --model F --max-tokens 1 hi` (a subprocess: Python's start,
chatapp's imports, the checks, the llama.cpp worker, the first token, the exit) and a fresh
`python -c "Llama(F, n_ctx=same, n_threads=same, n_threads_batch=same)"` that evaluates a short
prompt and picks one token (argmax; chatapp runs with --temperature 0 to pick it the same way).
Wall clock until the process exits, and peak memory two ways: the largest single process
(/usr/bin/time's maximum resident set: chatapp's worker is a child of the app, reaped before it
exits) and the whole process tree summed (/proc sampled every 10 ms). The commands alternate, so
the machine's load hits all alike; the median of the repeats is shown, with the load average
before and after. --tree measures other chatapp source trees in the same run (a copy of the code
before a change: before=/tmp/copy).

Without files: the built-in Q8_0 file, a Gemma-layout file with Gemma 3's 262,144-token
vocabulary (Q8_0, ~200 MB) and a Qwen2-layout file with Qwen2's 151,936 tokens, written by
tests/helpers/foreign_gguf.py to a temporary folder (or --keep DIR, reused when there).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

from model.inference.threads import default_threads  # noqa: E402
from quant.gguf_header import read_gguf_metadata  # noqa: E402

BUILTIN = ROOT / "chatapp" / "builtin" / "shakespeare-chat-q8_0.gguf"
FOREIGN_MAX_CONTEXT = 4096  # quant.llama_load's cap on a foreign file's context
# chatapp picks its token the way the baseline does (argmax): the files have random weights, whose flat
# distributions make top-p sampling over 262,144 tokens cost what a real model's peaked ones never do
GREEDY = ("--temperature", "0")

LLAMA_SNIPPET = """
import sys
from llama_cpp import Llama, llama_get_logits_ith
import numpy as np
path, n_ctx, n_threads, n_batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
llm = Llama(model_path=path, n_ctx=n_ctx, n_threads=n_threads, n_threads_batch=n_batch, verbose=False)
llm.eval(llm.tokenize(b"hi", add_bos=True))
logits = np.ctypeslib.as_array(llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),))
print(llm.detokenize([int(logits.argmax())]))
"""


def big_files(folder: Path) -> list[Path]:
    """Written by a child process: this one stays small, as each measured command is forked from it
    (a forked child's peak RSS starts at its parent's size)."""
    command = [sys.executable, __file__, "--write-files", str(folder)]
    subprocess.run(command, check=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    return [folder / name for name in BIG_FILES]


def write_big_files(folder: Path) -> None:
    import gguf

    from tests.helpers.foreign_gguf import write_foreign_gguf

    q8 = {"weight_type": "Q8_0", "file_type": int(gguf.LlamaFileType.MOSTLY_Q8_0)}
    for name, (family, options) in BIG_FILES.items():
        path = folder / name
        if not path.exists():
            print(f"writing {path} ...", file=sys.stderr, flush=True)
            write_foreign_gguf(path, family, name=name.removesuffix(".gguf"), context_length=8192, **options, **q8)


BIG_FILES = {
    # Gemma 3 270M's vocabulary and width, 4 blocks: ~206 MB
    "gemma-262k-q8_0.gguf": (
        "gemma",
        dict(vocab_size=262_144, embedding_length=640, head_count=4, block_count=4, feed_forward_length=2048),
    ),
    # Qwen2's vocabulary, an untied output: ~90 MB
    "qwen2-152k-q8_0.gguf": (
        "qwen2",
        dict(vocab_size=151_936, embedding_length=256, head_count=4, block_count=4, feed_forward_length=1024),
    ),
}


def context_of(path: Path) -> int:
    """The KV cache chatapp gives the file: its own context for ours, at most 4096 for others."""
    architecture = read_gguf_metadata(path, ("general.architecture",))["general.architecture"]
    keys = (f"{architecture}.context_length", "chatapp.chat_format")
    found = read_gguf_metadata(path, keys)
    context = found.get(keys[0])
    if keys[1] in found:
        return int(context)
    return min(int(context or FOREIGN_MAX_CONTEXT), FOREIGN_MAX_CONTEXT)


def tree_env(tree: Path, home: Path) -> dict:
    return dict(os.environ, CHATAPP_HOME=str(home), PYTHONPATH=str(tree))


def compile_bytecode(tree: Path) -> None:
    """Every module's .pyc written beforehand, as an install does: with PYTHONDONTWRITEBYTECODE set, a
    module changed since its last .pyc would be compiled again on every measured start."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    command = [sys.executable, "-m", "compileall", "-q", "chatapp", "model", "quant"]
    subprocess.run(command, cwd=tree, env=env, check=True, stdout=subprocess.DEVNULL)


def takes_threads(tree: Path, env: dict) -> bool:
    help_text = subprocess.run(
        [sys.executable, "-m", "chatapp", "run", "--help"], capture_output=True, text=True, cwd=tree, env=env
    ).stdout
    return "--threads" in help_text


def tree_threads(tree: Path, env: dict, size: int) -> tuple[int, int]:
    """The threads a tree without --threads picks by itself for a file of `size` bytes."""
    code = f"from model.inference.threads import default_threads; print(*default_threads({size}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tree, env=env).stdout
    decode, batch = map(int, out.split())
    return decode, batch


def _tree_rss(root: int) -> int:
    """Resident bytes of `root` and all its descendants."""
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as f:
                    todo += [int(child) for child in f.read().split()]
        except (OSError, ValueError):
            continue
    return total


TIME = "/usr/bin/time"


def measure(command: list[str], env: dict, cwd: Path) -> dict:
    """Wall clock, the largest process's peak RSS and the tree's peak RSS of one run. The largest
    process's comes from /usr/bin/time (a small process to fork from) when there is one."""
    timed = os.path.exists(TIME)
    if timed:
        command = [TIME, "-f", "maxrss_kb=%M", *command]
    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
        # files, not pipes: the time is the process's, not that of whatever else holds its output
        # (multiprocessing's resource tracker outlives chatapp by a few milliseconds)
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=stdout, stderr=stderr, env=env, cwd=cwd)
        peak_tree, done = 0, threading.Event()

        def sample() -> None:
            nonlocal peak_tree
            while not done.is_set():
                peak_tree = max(peak_tree, _tree_rss(process.pid))
                done.wait(0.01)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        done.set()
        sampler.join()
        process.returncode = os.waitstatus_to_exitcode(status)
        stderr.seek(0)
        errors = stderr.read().decode(errors="replace")
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({process.returncode}): {errors[-500:]}")
    max_rss_kb = usage.ru_maxrss
    if timed:
        max_rss_kb = int(errors.strip().splitlines()[-1].split("=")[1])
    return {"wall_s": wall, "max_rss_mb": max_rss_kb / 1024, "tree_rss_mb": peak_tree / 1e6}


def uptime() -> str:
    with open("/proc/loadavg") as f:
        return "load average " + ", ".join(f.read().split()[:3])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", type=Path)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep", type=Path, default=None, help="write the big files here and reuse them")
    parser.add_argument(
        "--tree",
        action="append",
        default=[],
        metavar="LABEL=PATH",
        help="a chatapp source tree to measure (repeatable; e.g. before=/tmp/before-copy); default: this one",
    )
    parser.add_argument("--write-files", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write_files is not None:
        write_big_files(args.write_files)
        return 0

    trees = [(label, Path(path).resolve()) for label, path in (t.split("=", 1) for t in args.tree)]
    trees = trees or [("chatapp", ROOT)]
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.keep or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        files = args.files or [BUILTIN, *big_files(folder)]
        home = Path(scratch) / "home"
        for _, tree in trees:
            compile_bytecode(tree)
        envs = {label: tree_env(tree, home) for label, tree in trees}
        explicit = {label: takes_threads(tree, envs[label]) for label, tree in trees}
        print(f"# cold start: {uptime()} at start; {os.cpu_count()} cores; {args.repeats} alternating runs, medians")
        print("| file | MB | ctx | who | threads | wall s | vs llama | max process RSS MB | vs llama | tree RSS MB |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for path in files:
            size = path.stat().st_size
            context = context_of(path)
            decode, batch = default_threads(size)
            commands: dict[str, tuple[list[str], dict, Path, str]] = {}
            llama = [sys.executable, "-c", LLAMA_SNIPPET, str(path), str(context), str(decode), str(batch)]
            commands["llama-cpp-python"] = (llama, envs[trees[0][0]], ROOT, f"{decode}/{batch}")
            for label, tree in trees:
                command = [
                    sys.executable,
                    "-m",
                    "chatapp",
                    "run",
                    "--model",
                    str(path),
                    "--max-tokens",
                    "1",
                    *GREEDY,
                    "hi",
                ]
                threads = (decode, batch)
                if explicit[label]:
                    command += ["--threads", str(decode), "--threads-batch", str(batch)]
                else:
                    threads = tree_threads(tree, envs[label], size)
                commands[label] = (command, envs[label], tree, "/".join(map(str, threads)))
            runs: dict[str, list[dict]] = {who: [] for who in commands}
            for _ in range(args.repeats):
                for who, (command, env, cwd, _threads) in commands.items():
                    runs[who].append(measure(command, env, cwd))

            def median(who: str, key: str, runs: dict[str, list[dict]] = runs) -> float:
                return statistics.median(run[key] for run in runs[who])

            base_wall, base_rss = median("llama-cpp-python", "wall_s"), median("llama-cpp-python", "max_rss_mb")
            for who, (_command, _env, _cwd, threads) in commands.items():
                wall, rss = median(who, "wall_s"), median(who, "max_rss_mb")
                print(
                    f"| {path.name} | {size / 1e6:.0f} | {context} | {who} | {threads} | {wall:.2f} "
                    f"| {wall / base_wall:.2f}x | {rss:.0f} | {rss / base_rss:.2f}x "
                    f"| {median(who, 'tree_rss_mb'):.0f} |",
                    flush=True,
                )
        print(f"# {uptime()} at the end; threads = decode/batch")
    return 0


if __name__ == "__main__":
    sys.exit(main())
