#!/usr/bin/env python3
"""Start-up and first-token times of a built bundle (the figures in packaging/README.md).

    python packaging/measure.py dist/chatapp-0.1.0-linux-x86_64/chatapp/chatapp

Every run gets an empty HOME and a PATH with nothing on it, as a fresh user's
first start would. Measures, as the median of --runs runs:
  version      `chatapp --version`, start to exit
  first token  `chatapp run PROMPT`: start to the first byte of the reply, and to exit
  first frame  the TUI in tmux (100x30): start to the first drawn screen, and to the
               model's name in the header (the model is loaded)
Standard library only; the TUI figures need tmux.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path


def clean_env(home: Path, empty_bin: Path) -> dict[str, str]:
    return {"HOME": str(home), "PATH": str(empty_bin), "TERM": "xterm-256color", "LANG": "C.UTF-8"}


def time_version(program: Path, env: dict) -> float:
    start = time.perf_counter()
    subprocess.run([str(program), "--version"], env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def time_run(program: Path, env: dict, prompt: str, max_tokens: int) -> tuple[float, float]:
    start = time.perf_counter()
    proc = subprocess.Popen(
        [str(program), "run", prompt, "--max-tokens", str(max_tokens), "--seed", "1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    proc.stdout.read(1)
    first = time.perf_counter() - start
    proc.stdout.read()
    proc.wait()
    return first, time.perf_counter() - start


def time_tui(program: Path, env: dict, model_marker: str, timeout: float = 60) -> tuple[float, float]:
    socket = f"chatapp-measure-{uuid.uuid4().hex[:8]}"
    tmux = ["tmux", "-L", socket]
    command = (
        "/usr/bin/env -i " + " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()) + " " + shlex.quote(str(program))
    )
    try:
        start = time.perf_counter()
        subprocess.run(tmux + ["new-session", "-d", "-s", "app", "-x", "100", "-y", "30", command], check=True)
        first = loaded = None
        while time.perf_counter() - start < timeout and loaded is None:
            screen = subprocess.run(tmux + ["capture-pane", "-p", "-t", "app"], capture_output=True, text=True).stdout
            now = time.perf_counter() - start
            if first is None and "Conversations" in screen:
                first = now
            if model_marker in screen:
                loaded = now
            time.sleep(0.01)
        if loaded is None:
            raise RuntimeError(f"{model_marker!r} never appeared on the screen:\n{screen}")
        return first, loaded
    finally:
        subprocess.run(tmux + ["kill-server"], capture_output=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("program", type=Path, help="the bundle's chatapp executable")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--prompt", default="Good morrow! Who art thou?")
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args(argv)
    program = args.program.resolve()

    with tempfile.TemporaryDirectory() as tmp:
        empty_bin = Path(tmp) / "bin"
        empty_bin.mkdir()

        def env() -> dict:  # a new empty HOME each time: every run is a first start
            return clean_env(Path(tempfile.mkdtemp(dir=tmp)), empty_bin)

        info = json.loads(
            subprocess.run(
                [str(program), "run", args.prompt, "--max-tokens", str(args.max_tokens), "--seed", "1", "--json"],
                env=env(),
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        )
        results = {
            "model": info["model"],
            "backend": info["backend"],
            "engine_time_to_first_token_s": info["time_to_first_token_s"],
            "tokens_per_second": info["tokens_per_second"],
        }
        results["version_s"] = statistics.median(time_version(program, env()) for _ in range(args.runs))
        runs = [time_run(program, env(), args.prompt, args.max_tokens) for _ in range(args.runs)]
        results["run_first_token_s"] = statistics.median(r[0] for r in runs)
        results["run_total_s"] = statistics.median(r[1] for r in runs)
        if shutil.which("tmux"):
            tui = [time_tui(program, env(), f"{info['model']} · {info['backend']}") for _ in range(args.runs)]
            results["tui_first_frame_s"] = statistics.median(t[0] for t in tui)
            results["tui_model_loaded_s"] = statistics.median(t[1] for t in tui)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
